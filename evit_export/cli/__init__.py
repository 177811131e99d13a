"""The ``evit-export`` command line: a thin shell over the Python API."""
from __future__ import annotations

import sys

import typer
from rich.console import Console

from evit_export.core.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="EfficientViT M0–M5: checkpoints → folded deploy graph → verified ONNX / CoreML / "
                       "TFLite artifacts.")
# Wide enough for report tables when output is piped or captured.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)

VariantOpt = typer.Option(None, "--variant", "-v", help="m0..m5 (also efficientvit_m0 / EfficientViT_M0)")
CheckpointOpt = typer.Option(None, "--checkpoint", "-c",
                             help="official/timm .pth, project .safetensors, or an http(s) URL")
NumClassesOpt = typer.Option(None, "--num-classes", help="default: from the checkpoint, else 1000")
ImgSizeOpt = typer.Option(None, "--img-size", help="default: from the checkpoint, else 224")
CalibrationDataOpt = typer.Option(None, "--calibration-data",
                                  help="int8: folder of images (ImageFolder or flat); default: the embedded "
                                  "digits' training split; 'random' calibrates on random data (warned)")
CalibrationSizeOpt = typer.Option(200, "--calibration-size", help="int8: calibration images used")


def print_notes(model) -> None:
    for note in getattr(model, "load_notes", []):
        err_console.print(f"[yellow]note:[/] {note}")


# Command modules in the order of the workflow; each registers itself on ``app``.
COMMAND_MODULES = ("train", "models", "onnx", "coreml", "tflite", "check", "parity", "bench", "package", "demo")


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"evit_export.cli.{name}")


def main(argv: list[str] | None = None) -> None:
    import click

    _register_commands()
    try:
        rc = app(args=argv, standalone_mode=False)
    except UserError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (KeyboardInterrupt, click.exceptions.Abort):
        err_console.print("interrupted")
        sys.exit(130)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)
