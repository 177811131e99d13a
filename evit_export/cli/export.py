"""One export command per registered target, built from the target itself: its options
dataclass (the fields made with ``cli_option``), its runner options (for the check
after the export), its help text, file suffix and summary lines. A format from
another distribution gets its command the same way; no module here names a format.

typer builds a command from a function's signature, so each command is a function
whose ``__signature__`` lists the common options and the target's own; typer has no
API for declaring options from data, which is why the signature is assembled here.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from evit_export.cli import (CalibrationDataOpt, CalibrationSizeOpt, CheckpointOpt, Flag, ImgSizeOpt, NumClassesOpt,
                             VariantOpt, app)
from evit_export.cli.export_common import export_and_check
from evit_export.core.errors import UserError
from evit_export.targets import Target, get_target, target_class, target_names

# Parameters every export command has, besides its target's own.
_COMMON = ("variant", "checkpoint", "out", "num_classes", "img_size", "seed", "check", "check_inputs")


def _common_parameters(target: Target) -> list[inspect.Parameter]:
    suffixes = " or ".join(target.suffixes)
    options = {
        "variant": (Optional[str], VariantOpt),
        "checkpoint": (Optional[str], CheckpointOpt),
        "out": (Optional[Path], typer.Option(None, "--out", "-o", metavar="PATH",
                                             help=f"{suffixes}; default: out/ folder, named after the variant "
                                             "and precision.")),
        "num_classes": (Optional[int], NumClassesOpt),
        "img_size": (Optional[int], ImgSizeOpt),
        "seed": (Optional[int], typer.Option(None, "--seed", metavar="SEED", help="Random weights seed (no "
                                             "checkpoint).")),
        "check": (bool, Flag(True, "--check/--no-check", help="Equivalence check after export.")),
        "check_inputs": (int, typer.Option(32, "--check-inputs", "-n", metavar="N",
                                           help="Random inputs for the equivalence check.")),
    }
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
            for name, (kind, default) in options.items()]


def _field_type(hint) -> tuple[type, bool]:
    """(the type typer parses, whether None is allowed) of a dataclass field's hint."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    base = args[0] if args else hint
    if typing.get_origin(base) in (tuple, list) or base is Path:
        base = str
    return base, optional


def _flag_names(field: dataclasses.Field) -> tuple[str, ...]:
    meta = field.metadata["cli"]
    flag = meta["flag"] or "--" + field.name.replace("_", "-")
    return (flag,)


def _field_parameters(options_type: type, prefix: str) -> list[tuple[dataclasses.Field, inspect.Parameter, list]]:
    """(field, its typer parameter, its hidden alias parameters) of every CLI field."""
    hints = typing.get_type_hints(options_type)
    found = []
    for field in dataclasses.fields(options_type):
        meta = field.metadata.get("cli")
        if not meta:
            continue
        kind, optional = _field_type(hints[field.name])
        flag = _flag_names(field)[0]
        default = field.default
        if meta["parse"] is not None or meta["choices"]:
            kind, default = str, (None if default is None else str(default))
            if meta["choices"]:
                kind = Enum(f"{field.name}_choices", {c: c for c in meta["choices"]}, type=str)
                default = _choice_default(kind, field.default)
        if kind is bool:
            decl = flag if default is False else f"{flag}/--no-{flag[2:]}"
            option = typer.Option(default, decl, help=meta["help"], metavar="", hidden=meta["hidden"])
        else:
            option = typer.Option(default, flag, help=meta["help"], metavar=meta["metavar"], hidden=meta["hidden"],
                                  case_sensitive=False)
        annotation = Optional[kind] if optional or default is None else kind
        param = inspect.Parameter(prefix + field.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                  annotation=annotation)
        aliases = [inspect.Parameter(f"{prefix}{field.name}__alias{i}", inspect.Parameter.KEYWORD_ONLY,
                                     default=typer.Option(None, alias, hidden=True, case_sensitive=False),
                                     annotation=Optional[kind])
                   for i, alias in enumerate(meta["aliases"])]
        found.append((field, param, aliases))
    return found


def _choice_default(kind, value):
    text = str(value)
    for member in kind:
        if member.value == text:
            return member
    return next(iter(kind))  # the field's default spelled otherwise (e.g. "none" shown as "fp32")


def _field_values(fields: list, kwargs: dict, prefix: str) -> dict[str, Any]:
    """The options dataclass arguments: each field's value (or an alias's), parsed."""
    values = {}
    for field, param, aliases in fields:
        value = kwargs.pop(param.name)
        for alias in aliases:
            alias_value = kwargs.pop(alias.name)
            if alias_value is not None:
                value = alias_value
        if isinstance(value, Enum):
            value = value.value
        parse = field.metadata["cli"]["parse"]
        if parse is not None and value is not None:  # the default is shown as text: keep it as it is
            value = field.default if value == str(field.default) else parse(value)
        values[field.name] = value
    return values


def build_export_command(name: str) -> None:
    """Register ``evit-export NAME`` for the target ``name`` on the app."""
    target = target_class(name)()  # declarations only: the runtime's import guard runs on use
    option_fields = _field_parameters(target.options_type, "")
    runner_fields = _field_parameters(target.runner_options_type, "runner_")
    field_names = {f.name for f in dataclasses.fields(target.options_type)}
    calibration = [] if "calibration_data" not in field_names else [
        inspect.Parameter("calibration_data", inspect.Parameter.KEYWORD_ONLY, default=CalibrationDataOpt,
                          annotation=Optional[str]),
        inspect.Parameter("calibration_size", inspect.Parameter.KEYWORD_ONLY, default=CalibrationSizeOpt,
                          annotation=int)]
    params = (_common_parameters(target) + [p for _, p, _ in option_fields] + calibration
              + [p for _, p, _ in runner_fields]
              + [a for _, _, aliases in option_fields + runner_fields for a in aliases])

    def command(**kwargs):
        common = {key: kwargs.pop(key) for key in _COMMON}
        values = _field_values(option_fields, kwargs, "")
        values.update({key: kwargs.pop(key) for key in ("calibration_data", "calibration_size") if key in kwargs})
        runner_values = _field_values(runner_fields, kwargs, "runner_")
        run_export(get_target(name), target.options_type(**values), target.runner_options_type(**runner_values),
                   **common)

    command.__signature__ = inspect.Signature(params)
    command.__name__ = f"{name}_cmd"
    command.__doc__ = target.cli_help or f"Export the folded deploy graph to {target.title or name}."
    app.command(name)(command)


def run_export(target: Target, options, runner_options, *, variant, checkpoint, out, num_classes, img_size, seed,
               check, check_inputs) -> None:
    """What every export command does: check the inputs, build the model, export, say
    what was written, check it against PyTorch."""
    from evit_export.models.reference import deploy_for_export

    # Options and --out are checked before the model is built: bad input fails before any work.
    if check_inputs < 1:
        raise UserError(f"--check-inputs {check_inputs} must be at least 1")
    if out is not None:
        target.check_output(out, options)
    deployed, spec = deploy_for_export(variant, checkpoint, num_classes, img_size, seed=seed)
    out = out or Path("out") / target.default_out_name(spec, options)
    export_and_check(target, deployed, options, runner_options, out=out, check=check, n=check_inputs)


def register_export_commands() -> list[str]:
    """One export command per registered target; returns their names."""
    names = target_names()
    for name in names:
        build_export_command(name)
    return names
