"""``evit-export coreml``"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from evit_export.cli import CheckpointOpt, ImgSizeOpt, NumClassesOpt, VariantOpt, app, console, err_console


@app.command("coreml")
def coreml_cmd(variant: Optional[str] = VariantOpt, checkpoint: Optional[str] = CheckpointOpt,
               out: Optional[Path] = typer.Option(None, "--out", "-o",
                                                  help="default: out/<variant>.mlpackage (.mlmodel for "
                                                       "--format neuralnetwork)"),
               precision: str = typer.Option("fp16", "--precision", help="fp16 | fp32"),
               min_ios: Optional[int] = typer.Option(None, "--min-ios",
                                                     help="15..18 (ML Program; 16+ with --compress), "
                                                          "13..18 (neuralnetwork)"),
               fmt: str = typer.Option("mlprogram", "--format", help="mlprogram (.mlpackage) | neuralnetwork "
                                                                    "(.mlmodel, iOS 13/14)"),
               input_kind: str = typer.Option("image", "--input", help="image (pass a CVPixelBuffer as is) | "
                                                                      "tensor (normalized float NCHW)"),
               output: str = typer.Option("classifier", "--output", help="classifier (labels + probabilities, "
                                                                        "for Vision) | logits"),
               labels: Optional[Path] = typer.Option(None, "--labels", help="text file, one label per line "
                                                                          "(default class_0...)"),
               compress: str = typer.Option("none", "--compress", help="none | int8 | palettize6"),
               batch: int = typer.Option(1, "--batch", help="fixed batch size"),
               num_classes: Optional[int] = NumClassesOpt, img_size: Optional[int] = ImgSizeOpt,
               seed: Optional[int] = typer.Option(None, "--seed", help="random weights seed (no checkpoint)"),
               check: bool = typer.Option(True, "--check/--no-check", help="equivalence check after export"),
               native: Optional[bool] = typer.Option(None, "--native/--no-native",
                                                     help="check with MLModel.predict (macOS) or with the "
                                                          "MIL interpreter; default: native on macOS"),
               compute_units: str = typer.Option("ALL", "--compute-units",
                                                 help="native check: ALL | CPU_ONLY | CPU_AND_GPU | CPU_AND_NE"),
               n: int = typer.Option(32, "-n", help="inputs for the equivalence check")):
    """Export to CoreML (ML Program or NeuralNetwork) for iPhone, then check it against PyTorch."""
    from evit_export.models.reference import deploy_for_export, read_labels
    from evit_export.targets import get_target
    from evit_export.targets.coreml.target import _native_default, check_labels, check_out, validate_options

    # Everything that needs no model is checked before the (slow) model build.
    validate_options(fmt, precision, min_ios, input_kind, output, compress, batch)
    if out is not None:
        check_out(out, fmt)
    label_list = read_labels(labels) if labels is not None else None
    target = get_target("coreml")
    deployed, spec = deploy_for_export(variant, checkpoint, num_classes, img_size, seed=seed)
    check_labels(label_list, spec)
    for note in spec.notes:
        err_console.print(f"[yellow]note:[/] {note}")
    suffix = ".mlpackage" if fmt == "mlprogram" else ".mlmodel"
    out = out or Path("out") / f"{spec.variant}{suffix}"
    artifact = target.export(deployed, spec, out, precision=precision, min_ios=min_ios, fmt=fmt,
                             input_kind=input_kind, output=output, labels=label_list, compress=compress,
                             batch=batch)
    info = artifact.info
    console.print(f"wrote {out} ({info['file_size'] / 1e6:.2f} MB, {fmt}, {precision}, iOS {info['min_ios']}+, "
                  f"{input_kind} input, {output} output, batch {batch}, converted in "
                  f"{info['convert_seconds']:.1f} s)")
    if compress != "none":
        before, after = info["size_before_compression"], info["size_after_compression"]
        console.print(f"weight compression {compress}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB "
                      f"({100 * after / before:.0f}%)")
    if not check:
        return
    use_native = _native_default() if native is None else native
    if fmt == "neuralnetwork" and not use_native:
        err_console.print("[yellow]note:[/] equivalence check skipped: a NeuralNetwork .mlmodel can only be "
                          "evaluated by CoreML itself (macOS); the MIL interpreter runs ML Programs")
        return
    from evit_export.cli.check import check_after_export

    check_after_export(out, n=n, runner_options={"native": native, "compute_units": compute_units})
