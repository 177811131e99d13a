"""The ``evit-export`` command line: a thin shell over the Python API (``evit_export.api``).

One module per command group registers its commands on ``app``; ``COMMAND_MODULES``
lists them in the order of the workflow, which is the order ``--help`` shows.
"""
from __future__ import annotations

import inspect
import re
import sys
from difflib import get_close_matches
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup

from evit_export.core.errors import UserError
from evit_export.targets.calibration import DEFAULT_CALIBRATION_SIZE


def reflow(text: str | None) -> str | None:
    """Docstrings wrap in the source; help text should wrap at the terminal. Joins the
    lines of each paragraph (typer's rich help keeps them, breaking sentences mid-way)."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines())
                       for p in paragraphs)


class _Argument(TyperArgument):
    def display_type_rich(self, ctx):
        return None if self.metavar else super().display_type_rich(ctx)


class _PlainHelpFlag:
    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    def format_help(self, ctx, formatter):
        from evit_export.cli.help_format import own_options_panel  # options laid out for 80 columns

        with own_options_panel():
            return super().format_help(ctx, formatter)


class _Group(_PlainHelpFlag, TyperGroup):
    def resolve_command(self, ctx, args):
        """typer suggests commands close to a typo; ``export`` (and ``exprot``) is not a
        command here, exports are one command per format, so say which."""
        try:
            return super().resolve_command(ctx, args)
        except Exception as e:  # typer's UsageError; its class is not public API
            message = getattr(e, "message", None)
            if message and "Did you mean" not in message and args and get_close_matches(args[0], ["export"]):
                from evit_export.targets import target_names

                e.message = (f"{message.rstrip('.')}. Did you mean one of the export commands: "
                             f"{', '.join(target_names())}?")
            raise


_NOT_A_CHOICE = re.compile(r"^(?:Value error, )?'([^']*)' is not one of (.+?)\.?$")


def choice_hint(message: str) -> str:
    """typer's "Value error, 'int4' is not one of 'fp32', 'fp16', 'int8'." reads as
    "'int4' is not one of 'fp32', 'fp16', 'int8': did you mean 'int8'?" (typer names the
    choices but suggests none, as click does for option names)."""
    m = _NOT_A_CHOICE.match(message.strip())
    if not m:
        return message
    value, listed = m.groups()
    choices = re.findall(r"'([^']*)'", listed)
    close = get_close_matches(value.lower(), choices, n=1, cutoff=0.5)
    return f"'{value}' is not one of {listed}" + (f": did you mean '{close[0]}'?" if close else ".")


class _Command(_PlainHelpFlag, TyperCommand):
    """typer 0.29 prints a type column beside arguments (``<path>``) and the help flag
    (``<bool>``) and writes required arguments as ``{ARTIFACT}``; ours read as words:
    ``ARTIFACT``, ``[ARTIFACT]``, ``ARTIFACT...``. typer has no setting for this, so the
    command class adjusts its own parameters."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)
        for param in self.params:
            if type(param) is TyperArgument and param.metavar:
                param.__class__ = _Argument  # same fields; only the help rendering differs

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as e:
            e.message = choice_hint(e.message)
            raise

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or param.name.upper()
                if param.nargs != 1 and not name.endswith("..."):
                    name += "..."
                pieces.append(name if param.required else f"[{name}]")
        return pieces


class _App(typer.Typer):
    """A Typer whose commands (in every command module) use ``_Command``."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _App(cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
           context_settings={"help_option_names": ["-h", "--help"]},
           help="EfficientViT M0–M5: checkpoints → folded deploy graph → verified ONNX / CoreML / TFLite / ExecuTorch artifacts.")
# Wide enough for report tables when output is piped or captured.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)

# Command modules in the order of the workflow; each registers itself on ``app``.
COMMAND_MODULES = [
    "train",
    "models",  # models, fold
    "export",  # one export command per registered target (cli/export.py)
    "check",  # check, inspect
    "parity",
    "bench",
    "compare",
    "simulate",
    "devices",
    "package",
    "verify_package",
    "sweep",
    "demo",
]


def Flag(default: bool, *decls: str, help: str | None = None) -> Any:
    """A boolean option; no type column in --help (typer would print ``<bool>``)."""
    return typer.Option(default, *decls, help=help, metavar="")


def JsonFlag() -> Any:
    return Flag(False, "--json", help="Print machine-readable JSON instead of tables.")


VariantOpt = typer.Option(None, "--variant", "-v", metavar="VARIANT",
                          help="m0 to m5 (also efficientvit_m0 or EfficientViT_M0).")
CheckpointOpt = typer.Option(None, "--checkpoint", "-c", metavar="CHECKPOINT",
                             help="Official or timm .pth, project .safetensors, or an http(s) URL.")
NumClassesOpt = typer.Option(None, "--num-classes", metavar="N",
                             help="Number of classes; default: from the checkpoint, else 1000.")
ImgSizeOpt = typer.Option(None, "--img-size", metavar="PIXELS",
                          help="Input size; default: from the checkpoint, else 224.")
ThreadsOpt = typer.Option(None, "--threads", metavar="N", help="Runtime threads; default: the runtime's own.")
CalibrationDataOpt = typer.Option(None, "--calibration-data", metavar="DIR",
                                  help="int8: folder of images of the model's own domain (ImageFolder or flat), "
                                  "required except for the embedded digits model; 'random' calibrates on "
                                  "random data (the artifact carries the warning).")
CalibrationSizeOpt = typer.Option(DEFAULT_CALIBRATION_SIZE, "--calibration-size", metavar="N", help="int8: calibration images used.")


def print_notes(model) -> None:
    for note in getattr(model, "load_notes", []):
        err_console.print(f"[yellow]note:[/] {note}")


def _version(value: bool) -> None:
    if value:
        import evit_export

        console.print(f"evit-export {evit_export.__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: Optional[bool] = typer.Option(None, "--version", metavar="", is_eager=True, callback=_version,
                                                 help="Print the version and exit.")) -> None:
    # No docstring: the app's help= above is the one shown.
    pass


# The order ``--help`` lists the commands in: the workflow first (train, fold, export,
# verify, measure, ship), then the reference commands. A module may define several
# commands (models and fold; check and inspect), so the order is by command name.
WORKFLOW_ORDER = ["train", "fold", "@export", "check", "parity", "bench", "compare", "simulate", "package",
                 "verify-package", "sweep", "demo", "devices", "models", "inspect"]


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"evit_export.cli.{name}")
    exports = importlib.import_module("evit_export.cli.export").register_export_commands()
    at = WORKFLOW_ORDER.index("@export")
    order = WORKFLOW_ORDER[:at] + exports + WORKFLOW_ORDER[at + 1:]

    def rank(info) -> int:
        name = info.name or info.callback.__name__.replace("_", "-")
        return order.index(name) if name in order else len(order)

    app.registered_commands.sort(key=rank)


def _flags_of(argv: list[str]) -> dict[str, str]:
    """Python parameter name -> how the command given in ``argv`` spells it
    (``checkpoint`` -> ``--checkpoint``, ``artifact`` -> ``ARTIFACT``)."""
    command = typer.main.get_command(app)
    for token in argv:  # descend through command groups (e.g. ``devices list``)
        sub = getattr(command, "commands", {}).get(token)
        if sub is None and not token.startswith("-"):
            break
        command = sub or command
    flags = {}
    for param in command.params:
        if param.param_type_name == "argument":
            flags[param.name] = param.metavar or param.name.upper()
        else:
            longs = [o for o in param.opts if o.startswith("--")]
            flags[param.name] = (longs or param.opts)[0]
    return flags


def cli_message(message: str, argv: list[str]) -> str:
    """The API's errors name Python parameters (``pass checkpoint=PATH``); on the command
    line they read as its flags (``pass --checkpoint PATH``)."""
    flags = _flags_of(argv)

    def spell(match: re.Match) -> str:
        name, rest = match.group(1), match.group(2)
        if name not in flags:
            return match.group(0)
        return flags[name] + (" " + rest if rest else "")

    return re.sub(r"\b([a-z_][a-z0-9_]*)=(\S?)", spell, message)


def _interrupted(exit: SystemExit) -> bool:
    """True when typer turned a KeyboardInterrupt into exit 130 (``Exit(130) from e``)."""
    context = exit.__context__
    return exit.code == 130 and isinstance(getattr(context, "__cause__", None), KeyboardInterrupt)


def main(argv: list[str] | None = None) -> None:
    """Run the command line. Usage errors (unknown command or option, missing argument)
    print typer's usage block with its suggestion and exit 2; a ``UserError`` prints one
    line and exits 2; Ctrl-C exits 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _register_commands()
    try:
        app(args=argv, prog_name="evit-export")  # standalone: typer reports usage errors itself
    except UserError as e:
        # escape: messages name extras such as evit-export[coreml], which rich would eat as markup
        err_console.print(f"[bold red]error:[/] {escape(cli_message(str(e), argv))}", highlight=False,
                          soft_wrap=True)
        sys.exit(e.exit_code)
    except Exception as e:
        from evit_export.core.atomic import is_disk_full

        if not is_disk_full(e):
            raise
        message = f"no space left on the disk ({e}): free some space, or set TMPDIR / --out elsewhere"
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except SystemExit as e:
        if _interrupted(e):
            cause = str(e.__context__.__cause__).strip()  # e.g. "CoreML export of m0.mlpackage stopped"
            err_console.print(escape(f"interrupted: {cause}" if cause else "interrupted"), highlight=False)
        raise
