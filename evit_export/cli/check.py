"""``check`` and ``inspect``: format-independent commands over any artifact."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from evit_export import api
from evit_export.cli import app, CheckpointOpt, console, Flag, JsonFlag, ThreadsOpt, VariantOpt
from evit_export.core.errors import UserError
from evit_export.core.jsonio import dumps_strict
from evit_export.targets import runner_options_for, suffixes_in_words, target_for
from evit_export.validation.check import ToleranceOverrides
from evit_export.validation.per_layer import per_layer


@app.command("check")
def check_cmd(artifact: Path = typer.Argument(..., metavar="ARTIFACT", help=f"An artifact: {suffixes_in_words()}."),
              checkpoint: Optional[str] = CheckpointOpt, variant: Optional[str] = VariantOpt,
              images: Optional[Path] = typer.Option(None, "--images", metavar="DIR",
                                                    help="Also compare on the images in this folder."),
              n: int = typer.Option(32, "--random-inputs", "-n", metavar="N", help="Seeded random inputs."),
              seed: int = typer.Option(0, "--seed", metavar="SEED", help="Seed of the random inputs."),
              max_abs_scale: Optional[float] = typer.Option(None, "--max-abs", metavar="SCALE",
                                                            help="fp32 tolerance: max abs error ≤ SCALE·max(1, "
                                                            "max |reference logit|); default 1e-4."),
              min_cosine: Optional[float] = typer.Option(None, "--min-cosine", metavar="COSINE",
                                                         help="Minimum cosine similarity; fp16 default 0.999."),
              min_top1: Optional[float] = typer.Option(None, "--min-top1", metavar="FRACTION",
                                                       help="Minimum top-1 agreement, e.g. 0.99; fp16 default "
                                                       "0.99, int8 0.98."),
              min_cosine_mean: Optional[float] = typer.Option(None, "--min-cosine-mean", metavar="COSINE",
                                                              help="Minimum mean cosine over images; int8 "
                                                              "default 0.99."),
              min_top5: Optional[float] = typer.Option(None, "--min-top5", metavar="FRACTION",
                                                       help="Minimum top-5 agreement; int8 default 0.85."),
              min_sqnr: Optional[float] = typer.Option(None, "--min-sqnr", metavar="DB",
                                                       help="Minimum output SQNR in dB; int8 default 20."),
              per_layer: bool = Flag(False, "--per-layer", help="int8: every quantized tensor's error against the "
                                     "float model (SQNR, cosine), worst first, with its op and block."),
              localize: bool = Flag(False, "--localize", help="On failure, name the first layer whose output "
                                    "leaves tolerance."),
              threads: Optional[int] = ThreadsOpt,
              native: Optional[bool] = typer.Option(None, "--native/--no-native", metavar="",
                                                    help="CoreML: MLModel.predict (the macOS default) or the "
                                                    "numpy MIL interpreter."),
              as_json: bool = JsonFlag()):
    """Numerical equivalence of an artifact against PyTorch.

    Exit 0 within tolerance, 1 outside it.
    """

    if per_layer:
        _per_layer(artifact, images=images, checkpoint=checkpoint, variant=variant, as_json=as_json)
        return
    report = api.check(artifact, checkpoint=checkpoint, variant=variant, images=images, n=n, seed=seed,
                       tolerances=ToleranceOverrides(max_abs_scale=max_abs_scale, min_cosine=min_cosine,
                                             min_top1=min_top1, min_cosine_mean=min_cosine_mean, min_top5=min_top5,
                                             min_sqnr_db=min_sqnr),
                       localize=localize, threads=threads,
                       runner_options=runner_options_for(target_for(artifact), threads=threads, native=native)
                       if native is not None else None)
    if as_json:
        sys.stdout.write(dumps_strict(report.to_dict(), indent=2) + "\n")
    else:
        _print_check(artifact, report)
    raise typer.Exit(0 if report.passed else 1)


def _print_check(artifact: Path, report) -> None:
    table = Table(title=f"{artifact} vs PyTorch ({report.runtime}, {report.precision})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in (("inputs", report.inputs), ("max abs error", f"{report.max_abs:.3g}"),
                         ("mean abs error", f"{report.mean_abs:.3g}"),
                         ("max relative error", f"{report.max_rel:.3g}"),
                         ("max |reference|", f"{report.ref_max_abs:.3g}"),
                         ("cosine (min / mean)", f"{report.cosine_min:.6f} / {report.cosine_mean:.6f}"),
                         ("top-1 agreement", f"{100 * report.top1_agreement:.2f}%"),
                         ("top-5 agreement", f"{100 * report.top5_agreement:.2f}%"),
                         ("output SQNR", "exact" if report.sqnr_db is None else f"{report.sqnr_db:.1f} dB"),
                         ("tolerance", report.tolerance)):
        table.add_row(label, value)
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print("[green]PASS[/]" if report.passed else "[red]FAIL[/]: " + "; ".join(report.failures))
    if report.localization and "unavailable" in report.localization:
        console.print(f"localize: {report.localization['unavailable']}")
    elif report.localization:
        from evit_export.validation.localize import Localization

        console.print(Localization(**report.localization).describe())


def _per_layer(artifact: Path, *, images, checkpoint, variant, as_json: bool, shown: int = 25) -> None:
    report = per_layer(artifact, images=images, checkpoint=checkpoint, variant=variant)
    if as_json:
        sys.stdout.write(dumps_strict(report.to_dict(), indent=2) + "\n")
        return
    table = Table(title=f"{artifact}: int8 error per quantized tensor, worst first ({report.inputs})")
    for column in ("block", "op", "SQNR dB", "cosine", "tensor"):
        table.add_column(column, justify="right" if column in ("SQNR dB", "cosine") else "left")
    for row in report.layers[:shown]:
        sqnr = "exact" if row["sqnr_db"] is None else f"{row['sqnr_db']:.1f}"
        table.add_row(row["block"], row["op"], sqnr, f"{row['cosine']:.4f}", row["tensor"][:60])
    console.print(table)
    blocks = Table(title="per block, worst first")
    for column in ("block", "tensors", "worst SQNR dB", "median SQNR dB", "worst op"):
        blocks.add_column(column)
    for b in report.blocks:
        blocks.add_row(b["block"], str(b["tensors"]), *("-" if v is None else f"{v:.1f}"
                                                         for v in (b["worst_sqnr_db"], b["median_sqnr_db"])),
                       b["worst_op"])
    console.print(blocks)
    console.print(f"{len(report.layers)} quantized tensors ({max(0, len(report.layers) - shown)} more with --json); "
                  "keep the worst blocks in float with keep_float=NAMES (--keep-float) or auto", highlight=False)


@app.command("inspect")
def inspect_cmd(artifact: Path = typer.Argument(..., metavar="ARTIFACT", help="An artifact file or package."),
                profile: bool = Flag(False, "--profile", help="Also measure each op type's share of runtime."),
                memory: bool = Flag(False, "--memory", help="Also plan activation memory from the graph (one "
                                    "torch.export of the model; always in --json)."),
                as_json: bool = JsonFlag()):
    """Graph report: op histogram, memory-bound ops, parameters, size, inputs and outputs."""
    from evit_export.validation.memory import static_memory  # imports torch: only when inspecting

    if not artifact.exists():
        raise UserError(f"artifact {artifact} does not exist: check the path")
    target = target_for(artifact)
    report = target.inspect(artifact)
    if profile:
        shares = target.op_time_profile(artifact)
        if shares is None:
            report.extra["profile"] = (f"not available: {target.title or target.name}'s runtime has no op profiler "
                                       "here; bench measures the whole model")
        else:
            report.extra["time_share"] = shares
    io = target.describe(artifact)
    planned = static_memory(str(artifact)) if memory or as_json else None
    if as_json:
        data = report.to_dict()
        data.update({k: planned[k] for k in ("activation_bytes", "packed_activation_bytes", "peak_live_bytes",
                                             "weight_bytes")})
        data["memory_method"] = planned["method"]
        data["inputs"] = [vars(t) for t in io["inputs"]]
        data["outputs"] = [vars(t) for t in io["outputs"]]
        sys.stdout.write(dumps_strict(data, indent=2, default=str) + "\n")
        return
    share = report.extra.get("time_share", {})
    table = Table(title=f"{artifact} ({report.target}): {report.total_ops} ops, "
                        f"{report.memory_bound_ops} memory-bound")
    for column in ("op", "count", "memory-bound") + (("time share",) if share else ()):
        table.add_column(column, justify="right" if column in ("count", "time share") else "left")
    for op, count in report.op_histogram.most_common():
        row = [op, str(count), "yes" if target.is_memory_bound(op) else ""]
        if share:
            row.append(f"{100 * share.get(op, 0):.1f}%")
        table.add_row(*row)
    console.print(table)
    console.print(f"parameters: {report.params:,}   file size: {report.file_size / 1e6:.2f} MB")
    if planned is not None:
        console.print(f"planned from the graph: activations {planned['activation_bytes'] / 1e6:.2f} MB "
                      f"(packed {planned['packed_activation_bytes'] / 1e6:.2f} MB), weights "
                      f"{planned['weight_bytes'] / 1e6:.2f} MB")
    for role in ("inputs", "outputs"):
        for t in io[role]:
            console.print(f"{role[:-1]} {t.name}: {t.dtype} {t.shape} {t.layout}, {t.value_range}")
    for key, value in report.extra.items():
        if key != "time_share":
            console.print(f"{key}: {value}")
