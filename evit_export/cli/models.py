"""``models`` and ``fold``: what the variants are, and the deploy form of one."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from evit_export.cli import CheckpointOpt, ImgSizeOpt, JsonFlag, NumClassesOpt, VariantOpt, app, console, print_notes
from evit_export.core.errors import UserError
from evit_export.core.jsonio import dumps_strict
from evit_export import api


@app.command("models")
def models_cmd(as_json: bool = JsonFlag(),
               num_classes: int = typer.Option(1000, "--num-classes", metavar="N",
                                               help="Count the classifier head for N classes."),
               img_size: int = typer.Option(224, "--img-size", metavar="PIXELS", help="Count MACs at this input size.")):
    """List the variants with exact parameter and MAC counts."""
    from evit_export.models.profile import variant_table

    rows = variant_table(num_classes=num_classes, img_size=img_size)
    if as_json:
        sys.stdout.write(dumps_strict(rows, indent=2) + "\n")
        return
    table = Table(title=f"EfficientViT variants ({img_size}×{img_size}, {num_classes} classes)")
    for col in ("variant", "params", "MACs", "C1,C2,C3", "depth", "heads", "paper top-1"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", f"{r['macs'] / 1e6:.0f} M",
                      ",".join(map(str, r["embed_dim"])), ",".join(map(str, r["depth"])),
                      ",".join(map(str, r["num_heads"])), f"{r['paper_top1']:.1f}")
    console.print(table)


@app.command("fold")
def fold_cmd(variant: Optional[str] = VariantOpt, checkpoint: Optional[str] = CheckpointOpt,
             out: Path = typer.Option(..., "--out", "-o", metavar="FILE",
                                      help="The deploy checkpoint to write, a .safetensors file."),
             num_classes: Optional[int] = NumClassesOpt, img_size: Optional[int] = ImgSizeOpt,
             seed: Optional[int] = typer.Option(None, "--seed", metavar="SEED",
                                                help="Without a checkpoint: seed of the realistic random weights.")):
    """Fold BatchNorm and write the deploy model in the project format."""
    from evit_export.models.checkpoint import save_project_checkpoint
    from evit_export.models.reference import fold_and_measure

    if out.suffix != ".safetensors":
        raise UserError(f"--out {out} must end in .safetensors (the project format)")
    model = api.load_model(variant, checkpoint, num_classes=num_classes, img_size=img_size, seed=seed)
    print_notes(model)
    deployed, max_diff = fold_and_measure(model)
    save_project_checkpoint(deployed, model.spec, out, extra={"folded": True, "fold_max_abs_diff": max_diff})
    console.print(f"folded EfficientViT-{model.spec.variant.upper()} → {out}  "
                  f"(max |logit diff| vs unfolded: {max_diff:.2e}, BatchNorm layers left: 0)")
