"""The options panel of ``--help``, laid out for 80 columns (the width help gets when it
is piped or captured: rich's default without a terminal).

typer's panel puts long names, short names, negative names, type and help in five
columns that rich shrinks together: at 80 columns metavars break mid-word ("CHECKPOI /
NT") and one ``--no-native`` widens a mostly empty column that squeezes every
description to ~20 characters. Here each option is one left cell, ``--native/--no-native,
-n METAVAR``, never broken, and its help fills the rest; a left cell wider than
``NAME_COLUMN_MAX`` of the width gets a line of its own, with the help below it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import Enum

from rich import box
from rich.console import Group
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from evit_export.cli import reflow

NAME_COLUMN_MAX = 0.4  # of the panel's inner width


def option_names(param) -> str:
    """``--native/--no-native``, ``--variant, -v``, ``ARTIFACT...``; with the metavar."""
    if param.param_type_name == "argument":
        name = param.metavar or param.name.upper()
        return name + ("..." if param.nargs != 1 and not name.endswith("...") else "")
    longs = [o for o in param.opts if o.startswith("--")]
    shorts = [o for o in param.opts if not o.startswith("--")]
    negatives = [o for o in param.secondary_opts if o.startswith("--")]
    text = "/".join(longs[:1] + negatives[:1]) or ""
    text = ", ".join(p for p in [text, *shorts] if p)
    metavar = _metavar(param)
    return f"{text} {metavar}" if metavar else text


def _metavar(param) -> str:
    try:
        shown = param.display_type_rich(None)  # typer's: the metavar, or <a|b|c> for choices
    except Exception:  # noqa: BLE001 - a type typer cannot name: show none
        shown = None
    shown = "" if shown in (None, "BOOLEAN") else str(shown)
    limits = getattr(param, "_get_number_range_help_str", lambda: "")()
    return f"{shown} [{limits}]" if limits else shown


def _default_text(param) -> str | None:
    if not getattr(param, "show_default", False) or getattr(param, "hidden", False):
        return None
    if isinstance(param.show_default, str):
        return param.show_default
    default = param.default
    if getattr(param, "is_flag", False):
        if not param.secondary_opts or default is None:
            return None
        return (param.opts if default else param.secondary_opts)[0]
    if default is None or default == "" or default == () or default == []:
        return None
    if isinstance(default, Enum):
        return str(default.value)
    if isinstance(default, (list, tuple)):
        return ", ".join(str(d.value if isinstance(d, Enum) else d) for d in default)
    return str(default)


def help_text(param) -> str:
    parts = [reflow(getattr(param, "help", None) or "") or ""]
    default = _default_text(param)
    if default is not None:
        parts.append(f"[default: {default}]")
    if param.required:
        parts.append("[required]")
    return " ".join(p for p in parts if p)


def options_panel(name: str, params, width: int) -> Panel:
    inner = max(20, width - 4)  # the panel's borders and padding
    rows = [(("* " if p.required and p.param_type_name == "argument" else "") + option_names(p), help_text(p))
            for p in params]
    limit = int(inner * NAME_COLUMN_MAX)
    fitting = [len(n) for n, _ in rows if len(n) <= limit]
    name_width = (max(fitting) if fitting else limit) + 2
    parts = []
    for names, text in rows:
        if len(names) + 2 <= name_width:
            grid = Table.grid()
            grid.add_column(width=name_width, no_wrap=True)
            grid.add_column(ratio=1)
            grid.add_row(Text(names, style="bold cyan"), Text(text))
            parts.append(grid)
        else:
            parts.append(Text(names, style="bold cyan", no_wrap=True, overflow="ignore"))
            if text:
                parts.append(Padding(Text(text), (0, 0, 0, name_width)))
    return Panel(Group(*parts), title=name, title_align="left", border_style="dim", box=box.ROUNDED)


def _print_options_panel(*, name, params, ctx, markup_mode, console) -> None:
    if params:
        console.print(options_panel(name, params, console.width))


@contextlib.contextmanager
def own_options_panel() -> Iterator[None]:
    """Render typer's help with this module's options panel (typer has no setting for
    the panel's layout; its help otherwise stays typer's)."""
    from typer import rich_utils

    original = rich_utils._print_options_panel
    rich_utils._print_options_panel = _print_options_panel
    try:
        yield
    finally:
        rich_utils._print_options_panel = original
