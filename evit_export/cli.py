"""The ``evit-export`` command line: a thin shell over the Python API."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import UserError

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


def _print_notes(model) -> None:
    for note in getattr(model, "load_notes", []):
        err_console.print(f"[yellow]note:[/] {note}")


@app.command("models")
def models_cmd(as_json: bool = typer.Option(False, "--json", help="machine-readable list"),
               num_classes: int = typer.Option(1000, "--num-classes"),
               img_size: int = typer.Option(224, "--img-size")):
    """List the variants with exact parameter and MAC counts."""
    from .models.profile import variant_table

    rows = variant_table(num_classes=num_classes, img_size=img_size)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title=f"EfficientViT variants ({img_size}×{img_size}, {num_classes} classes)")
    for col in ("variant", "params", "MACs", "C1,C2,C3", "depth", "heads", "paper top-1"):
        table.add_column(col, justify="right" if col not in ("variant",) else "left")
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", f"{r['macs'] / 1e6:.0f} M",
                      ",".join(map(str, r["embed_dim"])), ",".join(map(str, r["depth"])),
                      ",".join(map(str, r["num_heads"])), f"{r['paper_top1']:.1f}")
    console.print(table)


@app.command("fold")
def fold_cmd(variant: Optional[str] = VariantOpt, checkpoint: Optional[str] = CheckpointOpt,
             out: Path = typer.Option(..., "--out", "-o", help="deploy checkpoint, .safetensors"),
             num_classes: Optional[int] = NumClassesOpt, img_size: Optional[int] = ImgSizeOpt,
             seed: Optional[int] = typer.Option(None, "--seed", help="without a checkpoint: seeded "
                                                "realistic random weights")):
    """Fold BatchNorm and write the deploy model in the project format."""
    from .pipeline import fold_and_measure, prepare_model
    from .models.checkpoint import save_project_checkpoint

    if out.suffix != ".safetensors":
        raise UserError(f"--out {out} must end in .safetensors (the project format)")
    model = prepare_model(variant, checkpoint, num_classes, img_size, seed=seed)
    _print_notes(model)
    deployed, max_diff = fold_and_measure(model)
    save_project_checkpoint(deployed, model.spec, out, extra={"folded": True, "fold_max_abs_diff": max_diff})
    console.print(f"folded EfficientViT-{model.spec.variant.upper()} → {out}  "
                  f"(max |logit diff| vs unfolded: {max_diff:.2e}, BatchNorm layers left: 0)")


def _register_commands() -> None:
    """Commands live in ``evit_export/cmd_*.py`` next to the part of the pipeline
    they drive; each registers itself on ``app`` when imported."""
    import importlib
    import pkgutil

    import evit_export

    for mod in sorted(pkgutil.iter_modules(evit_export.__path__), key=lambda m: m.name):
        if mod.name.startswith("cmd_"):
            importlib.import_module(f"evit_export.{mod.name}")


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
