"""``evit-export onnx``: typer options -> ``OnnxOptions`` -> ``evit_export.api.export``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from evit_export.cli import (CalibrationDataOpt, CalibrationSizeOpt, CheckpointOpt, Flag, ImgSizeOpt, NumClassesOpt,
                             VariantOpt, app, console)
from evit_export.targets.onnx.options import OnnxPrecision, QuantFormat


@app.command("onnx")
def onnx_cmd(variant: Optional[str] = VariantOpt, checkpoint: Optional[str] = CheckpointOpt,
             out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE",
                                                help="Default: out/ folder, named after the variant "
                                                "and precision, e.g. m0_int8.onnx."),
             opset: int = typer.Option(17, "--opset", metavar="N", help="ONNX opset."),
             batch: int = typer.Option(1, "--batch", metavar="N", help="Fixed batch size."),
             dynamic_batch: bool = Flag(False, "--dynamic-batch", help="A free batch dimension instead."),
             precision: OnnxPrecision = typer.Option(OnnxPrecision.FP32, "--precision",
                                                     help="int8: static, calibrated."),
             calibration_data: Optional[str] = CalibrationDataOpt,
             calibration_size: int = CalibrationSizeOpt,
             quant_format: QuantFormat = typer.Option(QuantFormat.QOPERATOR, "--quant-format",
                                                      help="int8: qoperator (QLinear ops, fastest on onnxruntime's "
                                                      "CPU provider) or qdq (Quantize/Dequantize pairs, for "
                                                      "NNAPI/QNN/TensorRT)."),
             no_simplify: bool = Flag(False, "--no-simplify", help="Skip onnxsim/onnxslim."),
             ort_format: bool = Flag(False, "--ort", help="Also write the onnxruntime mobile .ort file."),
             num_classes: Optional[int] = NumClassesOpt, img_size: Optional[int] = ImgSizeOpt,
             seed: Optional[int] = typer.Option(None, "--seed", metavar="SEED",
                                                help="Random weights seed (no checkpoint)."),
             check: bool = Flag(True, "--check/--no-check", help="Equivalence check after export.")):
    """Export the folded deploy graph to ONNX (simplified, checked, spec in metadata)."""
    from evit_export.api import export
    from evit_export.cli.export_common import check_after_export, print_spec_notes, report_calibration
    from evit_export.core.atomic import check_writable
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets.onnx import OnnxOptions

    # Options and --out are checked before the model is built: bad input fails before any work.
    options = OnnxOptions(opset=opset, batch=None if dynamic_batch else batch, precision=precision,
                          simplify=not no_simplify, ort_format=ort_format, calibration_data=calibration_data,
                          calibration_size=calibration_size, quant_format=quant_format)
    if out is not None:
        check_writable(out)
    deployed, spec = deploy_for_export(variant, checkpoint, num_classes, img_size, seed=seed)
    suffix = "" if options.precision == OnnxPrecision.FP32 else f"_{options.precision}"
    out = out or Path("out") / f"{spec.variant}{suffix}.onnx"
    info = export(deployed, "onnx", options, out=out).info
    console.print(f"wrote {out} ({info['file_size'] / 1e6:.2f} MB, opset {opset}, {options.precision_label()}, "
                  f"batch {'dynamic' if dynamic_batch else batch}, simplified with {info['simplifier']}, "
                  f"{info['export_seconds']:.1f} s)")
    if ort_format:
        verdict = info["ort"]["mobile_usability"]
        console.print(f"wrote {info['ort']['path']} ({info['ort']['size'] / 1e6:.2f} MB); mobile usability "
                      f"check exit {verdict['returncode']}, details in {out}.evit.json")
    print_spec_notes(spec)  # after the export: a bad input stays a one-line error
    report_calibration(info)
    if check:
        check_after_export(out, images=calibration_data)
