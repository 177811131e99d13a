"""``evit-export coreml``: typer options -> ``CoreMLOptions`` -> ``evit_export.api.export``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from evit_export.cli import CheckpointOpt, Flag, ImgSizeOpt, NumClassesOpt, VariantOpt, app, console, err_console
from evit_export.targets.coreml.options import (Compression, ComputeUnits, CoreMLPrecision, InputKind, ModelFormat,
                                                OutputKind)


@app.command("coreml")
def coreml_cmd(variant: Optional[str] = VariantOpt, checkpoint: Optional[str] = CheckpointOpt,
               out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="PATH",
                                                  help="Default: out/ folder, named after the variant "
                                                  "(.mlpackage; .mlmodel for neuralnetwork)."),
               precision: CoreMLPrecision = typer.Option(CoreMLPrecision.FP16, "--precision",
                                                         help="Compute precision."),
               min_ios: Optional[int] = typer.Option(None, "--min-ios", metavar="VERSION",
                                                     help="15 to 18 (ML Program; 16+ with --compress), 13 or 14 "
                                                     "(neuralnetwork); default: the lowest allowed."),
               fmt: ModelFormat = typer.Option(ModelFormat.MLPROGRAM, "--format",
                                               help="mlprogram (.mlpackage) or neuralnetwork (.mlmodel, iOS 13/14)."),
               input_kind: InputKind = typer.Option(InputKind.IMAGE, "--input",
                                                    help="image (pass a CVPixelBuffer as is) or tensor (normalized "
                                                    "float NCHW)."),
               output: OutputKind = typer.Option(OutputKind.CLASSIFIER, "--output",
                                                 help="classifier (labels + probabilities, for Vision) or logits."),
               labels: Optional[Path] = typer.Option(None, "--labels", metavar="FILE",
                                                     help="Text file, one label per line (default class_0...)."),
               compress: Compression = typer.Option(Compression.NONE, "--compress",
                                                    help="Weight compression: int8 (linear) or palettize6 "
                                                    "(6-bit look-up table)."),
               batch: int = typer.Option(1, "--batch", metavar="N", help="Fixed batch size."),
               num_classes: Optional[int] = NumClassesOpt, img_size: Optional[int] = ImgSizeOpt,
               seed: Optional[int] = typer.Option(None, "--seed", metavar="SEED",
                                                  help="Random weights seed (no checkpoint)."),
               check: bool = Flag(True, "--check/--no-check", help="Equivalence check after export."),
               native: Optional[bool] = typer.Option(None, "--native/--no-native", metavar="",
                                                     help="Check with MLModel.predict (macOS) or with the MIL "
                                                     "interpreter; default: native on macOS."),
               compute_units: ComputeUnits = typer.Option(ComputeUnits.ALL, "--compute-units", case_sensitive=False,
                                                          help="Native check: the CoreML compute units."),
               n: int = typer.Option(32, "-n", metavar="N", help="Inputs for the equivalence check.")):
    """Export to CoreML (ML Program or NeuralNetwork) for iPhone, then check it against PyTorch."""
    from evit_export.api import export
    from evit_export.cli.export_common import check_after_export, print_spec_notes
    from evit_export.models.reference import deploy_for_export, read_labels
    from evit_export.targets.coreml import CoreMLOptions, CoreMLRunnerOptions
    from evit_export.targets.coreml.exporter import check_out
    from evit_export.targets.coreml.runner import native_available

    # Options and --out are checked before the model is built: bad input fails before any work.
    options = CoreMLOptions(precision=precision, min_ios=min_ios, format=fmt, input=input_kind, output=output,
                            labels=read_labels(labels) if labels is not None else None, compress=compress,
                            batch=batch)
    runner_options = CoreMLRunnerOptions(native=native, compute_units=compute_units)
    if out is not None:
        check_out(out, options)
    deployed, spec = deploy_for_export(variant, checkpoint, num_classes, img_size, seed=seed)
    out = out or Path("out") / f"{spec.variant}{fmt.suffix}"
    info = export(deployed, "coreml", options, out=out).info  # checks the labels against the model first
    print_spec_notes(spec)
    _print_summary(out, info, options)
    if not check:
        return
    if fmt == ModelFormat.NEURALNETWORK and not (native_available() if native is None else native):
        err_console.print("[yellow]note:[/] equivalence check skipped: a NeuralNetwork .mlmodel can only be "
                          "evaluated by CoreML itself (macOS); the MIL interpreter runs ML Programs")
        return
    check_after_export(out, n=n, runner_options=runner_options)


def _print_summary(out: Path, info: dict, options) -> None:
    console.print(f"wrote {out} ({info['file_size'] / 1e6:.2f} MB, {options.format}, {options.precision_label()}, "
                  f"iOS {info['min_ios']}+, {options.input} input, {options.output} output, batch {options.batch}, "
                  f"converted in {info['convert_seconds']:.1f} s)")
    if options.compress != Compression.NONE:
        before, after = info["size_before_compression"], info["size_after_compression"]
        console.print(f"weight compression {options.compress}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB "
                      f"({100 * after / before:.0f}%)")
