"""``evit-export tflite``: typer options -> ``TFLiteOptions`` -> ``evit_export.api.export``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from evit_export.cli import (CalibrationDataOpt, CalibrationSizeOpt, CheckpointOpt, Flag, ImgSizeOpt, NumClassesOpt,
                             ThreadsOpt, VariantOpt, app, console)
from evit_export.targets.tflite.options import InputType, Layout, Quantize


@app.command("tflite")
def tflite_cmd(variant: Optional[str] = VariantOpt, checkpoint: Optional[str] = CheckpointOpt,
               out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE",
                                                  help="Default: out/ folder, named after the variant "
                                                  "and mode, e.g. m0_int8.tflite."),
               quantize: Quantize = typer.Option(Quantize.NONE, "--quantize", "-q",
                                                 help="none (fp32), fp16, dynamic (int8 weights) or int8 "
                                                 "(full-integer, calibrated)."),
               calibration_data: Optional[str] = CalibrationDataOpt,
               calibration_size: int = CalibrationSizeOpt,
               input_type: InputType = typer.Option(InputType.FLOAT, "--input",
                                                    help="float (normalized image) or uint8 (raw RGB 0..255, "
                                                    "normalization in the graph; needs --quantize int8)."),
               float_attention: bool = Flag(False, "--float-attention",
                                            help="int8: keep q·kᵀ, softmax and attn·v in float so the whole graph "
                                            "runs inside XNNPACK (faster on CPU; not full-integer, so not for "
                                            "NNAPI / Edge TPU)."),
               layout: Layout = typer.Option(Layout.NHWC, "--layout", help="Input layout."),
               batch: int = typer.Option(1, "--batch", metavar="N", help="Fixed batch size."),
               num_classes: Optional[int] = NumClassesOpt, img_size: Optional[int] = ImgSizeOpt,
               seed: Optional[int] = typer.Option(None, "--seed", metavar="SEED",
                                                  help="Random weights seed (no checkpoint)."),
               threads: Optional[int] = ThreadsOpt,
               check: bool = Flag(True, "--check/--no-check", help="Equivalence check after export.")):
    """Export to TFLite / LiteRT: native NHWC graph, fp32 / fp16 / dynamic / int8, spec in metadata."""
    from evit_export.api import export
    from evit_export.cli.export_common import check_after_export, print_spec_notes, report_calibration
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets import RunnerOptions
    from evit_export.targets.tflite import TFLiteOptions
    from evit_export.targets.tflite.exporter import check_out

    # Options and --out are checked before the model is built: bad input fails before any work.
    options = TFLiteOptions(quantize=quantize, calibration_data=calibration_data, calibration_size=calibration_size,
                            input_type=input_type, layout=layout, batch=batch, float_attention=float_attention)
    runner_options = RunnerOptions(threads=threads)
    if out is not None:
        check_out(out)
    deployed, spec = deploy_for_export(variant, checkpoint, num_classes, img_size, seed=seed)
    suffix = "" if options.quantize == Quantize.NONE else f"_{options.quantize}"
    out = out or Path("out") / f"{spec.variant}{suffix}.tflite"
    artifact = export(deployed, "tflite", options, out=out)
    info = artifact.info
    print_spec_notes(spec)  # after the export, so that a bad-input error stays one line
    gpu = info.get("gpu_delegate") or {}
    gpu_text = ("GPU delegate: compatible" if gpu.get("compatible") else
                f"GPU delegate: NOT fully compatible ({len(gpu.get('problems', []))} findings)"
                if gpu.get("checked") else "GPU delegate: not checked")
    console.print(f"wrote {out} ({info['file_size'] / 1e6:.2f} MB, {info['precision']}, input "
                  f"{info['io']['input']['dtype']} {info['layout']}, batch {batch}, "
                  f"{info['export_seconds']:.1f} s); labels in {info['labels']}; {gpu_text}")
    report_calibration(info)
    if check:
        check_after_export(out, images=calibration_data, runner_options=runner_options)
