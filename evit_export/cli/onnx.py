"""``evit-export onnx``"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from evit_export.cli import (CalibrationDataOpt, CalibrationSizeOpt, CheckpointOpt, ImgSizeOpt, NumClassesOpt, VariantOpt, app,
                  console, err_console)


@app.command("onnx")
def onnx_cmd(variant: Optional[str] = VariantOpt, checkpoint: Optional[str] = CheckpointOpt,
             out: Optional[Path] = typer.Option(None, "--out", "-o", help="default: out/<variant>.onnx "
                                                "(fp16/int8: out/<variant>_<precision>.onnx)"),
             opset: int = typer.Option(17, "--opset"),
             batch: int = typer.Option(1, "--batch", help="fixed batch size"),
             dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="free batch dimension"),
             precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | int8 (static, calibrated)"),
             calibration_data: Optional[str] = CalibrationDataOpt,
             calibration_size: int = CalibrationSizeOpt,
             quant_format: str = typer.Option("qoperator", "--quant-format",
                                              help="int8: qoperator (QLinear ops, fastest on onnxruntime's CPU "
                                              "provider) | qdq (Quantize/Dequantize pairs, for NNAPI/QNN/TensorRT)"),
             no_simplify: bool = typer.Option(False, "--no-simplify"),
             ort: bool = typer.Option(False, "--ort", help="also write the onnxruntime mobile .ort file"),
             num_classes: Optional[int] = NumClassesOpt, img_size: Optional[int] = ImgSizeOpt,
             seed: Optional[int] = typer.Option(None, "--seed", help="random weights seed (no checkpoint)"),
             check: bool = typer.Option(True, "--check/--no-check", help="equivalence check after export")):
    """Export the folded deploy graph to ONNX (simplified, checked, spec in metadata)."""
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets.onnx.target import export_onnx, validate_options

    batch_arg = None if dynamic_batch else batch
    # fail before any work, never after
    precision, quant_format = validate_options(out, opset, batch_arg, precision, calibration_data, quant_format)
    deployed, spec = deploy_for_export(variant, checkpoint, num_classes, img_size, seed=seed)
    for note in spec.notes:
        err_console.print(f"[yellow]note:[/] {note}")
    suffix = "" if precision == "fp32" else f"_{precision}"
    out = out or Path("out") / f"{spec.variant}{suffix}.onnx"
    artifact = export_onnx(deployed, spec, out, opset=opset, batch=batch_arg, precision=precision,
                           simplify=not no_simplify, ort_format=ort, calibration_data=calibration_data,
                           calibration_size=calibration_size, quant_format=quant_format)
    info = artifact.info
    console.print(f"wrote {out} ({info['file_size'] / 1e6:.2f} MB, opset {opset}, {precision}"
                  + (f" {quant_format}" if precision == "int8" else "") + ", "
                  f"batch {'dynamic' if dynamic_batch else batch}, simplified with {info['simplifier']}, "
                  f"{info['export_seconds']:.1f} s)")
    if ort:
        verdict = info["ort"]["mobile_usability"]
        console.print(f"wrote {info['ort']['path']} ({info['ort']['size'] / 1e6:.2f} MB); mobile usability "
                      f"check exit {verdict['returncode']}, details in {out}.evit.json")
    from evit_export.cli.check import check_after_export, report_calibration

    report_calibration(info)
    if check:
        check_after_export(out)
