"""Which apps a package gets. The templates themselves live with their targets
(``evit_export.targets.apps`` and ``targets/<name>/app.py``); a target without any (a
third-party or throwaway target) gets a generic integration note: never an error."""
from __future__ import annotations

from evit_export.core.errors import UserError
from evit_export.targets import all_targets
from evit_export.targets.apps import AppContext, app_writers, auto_apps

__all__ = ["APP_KINDS", "AppContext", "app_writers", "auto_apps", "chosen_apps", "generic_note",
           "write_apps"]

APP_KINDS = ("auto", "ios", "android", "web", "python")


def app_needs(kind: str) -> str:
    """Which artifacts offer app ``kind``, for the error when another target is asked for it."""
    offering = [f"{t.title or t.name} ({' / '.join(t.suffixes)})" for t in all_targets() if kind in t.app_writers()]
    return " or ".join(offering) or "no installed format's"


def chosen_apps(target_name: str, app: str) -> tuple[str, ...]:
    if app not in APP_KINDS:
        raise UserError(f"--app {app} is not an app kind: choose one of {', '.join(APP_KINDS)}")
    if app == "auto":
        return auto_apps(target_name)
    offered = app_writers(target_name)
    if app not in offered:
        have = ", ".join(offered) or "none"
        raise UserError(f"--app {app} needs a {app_needs(app)} artifact; a {target_name} artifact offers: {have}")
    return (app,)


def write_apps(ctx: AppContext, target_name: str, app: str = "auto") -> dict[str, str]:
    """Write the chosen apps into ``ctx.root``; returns app kind -> markdown usage text."""
    writers = app_writers(target_name)
    return {kind: writers[kind](ctx) for kind in chosen_apps(target_name, app)}


def generic_note(target_name: str, model_file: str) -> str:
    return (f"No app template exists for {target_name} artifacts. Feed `{model_file}` as `preprocessing.json` "
            "says (its `rules` are exact: the checks used them), and compare your app's result on `sample.png` "
            "with `expected.json`.\n")


