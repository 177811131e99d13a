"""``evit-export tflite``"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from evit_export.cli import (CalibrationDataOpt, CalibrationSizeOpt, CheckpointOpt, ImgSizeOpt, NumClassesOpt, VariantOpt, app,
                  console, err_console)


@app.command("tflite")
def tflite_cmd(variant: Optional[str] = VariantOpt, checkpoint: Optional[str] = CheckpointOpt,
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="default: out/<variant>.tflite "
                                                  "(int8/fp16/dynamic: out/<variant>_<mode>.tflite)"),
               quantize: str = typer.Option("none", "--quantize", "-q", help="none | fp16 | dynamic | int8"),
               calibration_data: Optional[str] = CalibrationDataOpt,
               calibration_size: int = CalibrationSizeOpt,
               input_type: str = typer.Option("float", "--input", help="float (normalized image) | uint8 (raw "
                                              "RGB 0..255, normalization in the graph; needs --quantize int8)"),
               float_attention: bool = typer.Option(
                   False, "--float-attention", help="int8: keep q·kᵀ, softmax and attn·v in float so the whole "
                   "graph runs inside XNNPACK (faster on CPU; not full-integer, so not for NNAPI / Edge TPU)"),
               layout: str = typer.Option("nhwc", "--layout", help="input layout: nhwc | nchw"),
               batch: int = typer.Option(1, "--batch", help="fixed batch size"),
               num_classes: Optional[int] = NumClassesOpt, img_size: Optional[int] = ImgSizeOpt,
               seed: Optional[int] = typer.Option(None, "--seed", help="random weights seed (no checkpoint)"),
               threads: Optional[int] = typer.Option(None, "--threads", help="LiteRT threads for the check"),
               check: bool = typer.Option(True, "--check/--no-check", help="equivalence check after export")):
    """Export to TFLite / LiteRT: native NHWC graph, fp32 / fp16 / dynamic / int8, spec in metadata."""
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets.tflite.target import export_tflite, validate_options

    quantize, input_type, layout = validate_options(out, quantize, input_type, layout, batch, calibration_data,
                                                    float_attention)
    deployed, spec = deploy_for_export(variant, checkpoint, num_classes, img_size, seed=seed)
    suffix = "" if quantize in ("none", "fp32") else f"_{quantize}"
    out = out or Path("out") / f"{spec.variant}{suffix}.tflite"
    artifact = export_tflite(deployed, spec, out, quantize=quantize, calibration_data=calibration_data,
                             calibration_size=calibration_size, input_type=input_type, layout=layout,
                             batch=batch, float_attention=float_attention)
    info = artifact.info
    for note in spec.notes:  # after the export, so that a bad-input error stays one line
        err_console.print(f"[yellow]note:[/] {note}")
    gpu = info.get("gpu_delegate") or {}
    gpu_text = ("GPU delegate: compatible" if gpu.get("compatible") else
                f"GPU delegate: NOT fully compatible ({len(gpu.get('problems', []))} findings)"
                if gpu.get("checked") else "GPU delegate: not checked")
    console.print(f"wrote {out} ({info['file_size'] / 1e6:.2f} MB, {info['precision']}, input "
                  f"{info['io']['input']['dtype']} {info['layout']}, batch {batch}, "
                  f"{info['export_seconds']:.1f} s); labels in {info['labels']}; {gpu_text}")
    from evit_export.cli.check import check_after_export, report_calibration

    report_calibration(info)
    if check:
        # Quantised models are judged on held-out real images (check_artifact's default).
        check_after_export(out, threads=threads)
