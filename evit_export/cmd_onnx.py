"""``evit-export onnx``"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli import CheckpointOpt, ImgSizeOpt, NumClassesOpt, VariantOpt, app, console, err_console


@app.command("onnx")
def onnx_cmd(variant: Optional[str] = VariantOpt, checkpoint: Optional[str] = CheckpointOpt,
             out: Optional[Path] = typer.Option(None, "--out", "-o", help="default: out/<variant>.onnx"),
             opset: int = typer.Option(17, "--opset"),
             batch: int = typer.Option(1, "--batch", help="fixed batch size"),
             dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="free batch dimension"),
             precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16"),
             no_simplify: bool = typer.Option(False, "--no-simplify"),
             ort: bool = typer.Option(False, "--ort", help="also write the onnxruntime mobile .ort file"),
             num_classes: Optional[int] = NumClassesOpt, img_size: Optional[int] = ImgSizeOpt,
             seed: Optional[int] = typer.Option(None, "--seed", help="random weights seed (no checkpoint)"),
             check: bool = typer.Option(True, "--check/--no-check", help="equivalence check after export")):
    """Export the folded deploy graph to ONNX (simplified, checked, spec in metadata)."""
    from .pipeline import deploy_for_export
    from .targets.onnx_target import export_onnx, supported_opsets
    from .errors import UserError

    lo, hi = supported_opsets()
    if not lo <= opset <= hi:
        raise UserError(f"--opset {opset} is not supported here: choose {lo}..{hi}")
    from .atomic import check_writable

    if out is not None:
        check_writable(out)  # fail before any work, never after
    deployed, spec = deploy_for_export(variant, checkpoint, num_classes, img_size, seed=seed)
    for note in spec.notes:
        err_console.print(f"[yellow]note:[/] {note}")
    out = out or Path("out") / f"{spec.variant}.onnx"
    artifact = export_onnx(deployed, spec, out, opset=opset, batch=None if dynamic_batch else batch,
                           precision=precision, simplify=not no_simplify, ort_format=ort)
    info = artifact.info
    console.print(f"wrote {out} ({info['file_size'] / 1e6:.2f} MB, opset {opset}, {precision}, "
                  f"batch {'dynamic' if dynamic_batch else batch}, simplified with {info['simplifier']}, "
                  f"{info['export_seconds']:.1f} s)")
    if ort:
        verdict = info["ort"]["mobile_usability"]
        console.print(f"wrote {info['ort']['path']} ({info['ort']['size'] / 1e6:.2f} MB); mobile usability "
                      f"check exit {verdict['returncode']}, details in {out}.evit.json")
    if check:
        from .cmd_validate import check_after_export

        check_after_export(out)
