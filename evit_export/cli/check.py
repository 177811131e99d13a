"""``check`` and ``inspect``: format-independent commands over any artifact."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from evit_export.cli import CheckpointOpt, VariantOpt, app, console


def report_calibration(info: dict) -> None:
    """Where an int8 export's activation ranges came from; random data is a loud warning."""
    from evit_export.cli import err_console

    calib = info.get("calibration")
    if not calib:
        return
    if calib.get("random"):
        err_console.print(f"[bold red]WARNING:[/] {calib['warning']}")
    console.print(f"int8 calibration: {calib['source']}")


def check_after_export(artifact: Path, **options) -> None:
    """The equivalence check every export command runs on what it wrote: one summary
    line, exit 1 when outside tolerance. ``options`` go to ``check_artifact``."""
    from evit_export.validation.check import check_artifact

    report = check_artifact(artifact, **options)
    status = "[green]PASS[/]" if report.passed else "[red]FAIL[/]: " + "; ".join(report.failures)
    console.print(f"equivalence vs PyTorch ({report.runtime}) on {report.inputs}: max abs {report.max_abs:.2e}, "
                  f"cosine min {report.cosine_min:.6f}, top-1 agreement {100 * report.top1_agreement:.1f}% {status}")
    if not report.passed:
        raise typer.Exit(1)


@app.command("check")
def check_cmd(artifact: Path = typer.Argument(..., help=".onnx / .mlpackage / .mlmodel / .tflite"),
              checkpoint: Optional[str] = CheckpointOpt, variant: Optional[str] = VariantOpt,
              images: Optional[Path] = typer.Option(None, "--images", help="also compare on these images"),
              n: int = typer.Option(32, "-n", help="seeded random inputs"),
              seed: int = typer.Option(0, "--seed"),
              max_abs_scale: Optional[float] = typer.Option(None, "--max-abs", help="fp32 tolerance scale"),
              min_cosine: Optional[float] = typer.Option(None, "--min-cosine"),
              min_top1: Optional[float] = typer.Option(None, "--min-top1", help="fraction, e.g. 0.99"),
              localize: bool = typer.Option(False, "--localize", help="on failure, name the first layer "
                                            "whose output leaves tolerance"),
              threads: Optional[int] = typer.Option(None, "--threads"),
              native: Optional[bool] = typer.Option(None, "--native/--no-native",
                                                    help="CoreML: MLModel.predict (macOS default) or the "
                                                    "numpy MIL interpreter"),
              as_json: bool = typer.Option(False, "--json")):
    """Numerical equivalence of an artifact against PyTorch. Exit 0 within tolerance, 1 not."""
    from evit_export.validation.check import check_artifact

    report = check_artifact(artifact, checkpoint, variant, images, n, seed, max_abs_scale, min_cosine,
                            min_top1, localize, threads,
                            runner_options={"native": native} if native is not None else None)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
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
                             ("tolerance", report.tolerance)):
            table.add_row(label, value)
        console.print(table)
        verdict = "[green]PASS[/]" if report.passed else "[red]FAIL[/]: " + "; ".join(report.failures)
        console.print(verdict)
        if report.localization:
            from evit_export.validation.localize import Localization

            console.print(Localization(**report.localization).describe())
    raise typer.Exit(0 if report.passed else 1)


@app.command("inspect")
def inspect_cmd(artifact: Path = typer.Argument(...),
                profile: bool = typer.Option(False, "--profile", help="share of runtime per op type"),
                as_json: bool = typer.Option(False, "--json")):
    """Graph report: op histogram, memory-bound ops, parameters, size, inputs/outputs."""
    from evit_export.core.errors import UserError
    from evit_export.targets import target_for

    if not artifact.exists():
        raise UserError(f"artifact {artifact} does not exist: check the path")
    target = target_for(artifact)
    report = target.inspect(artifact, profile=profile)
    io = target.describe(artifact)
    if as_json:
        data = report.to_dict()
        data["inputs"] = [vars(t) for t in io["inputs"]]
        data["outputs"] = [vars(t) for t in io["outputs"]]
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    share = report.extra.get("time_share", {})
    table = Table(title=f"{artifact} ({report.target}): {report.total_ops} ops, "
                        f"{report.memory_bound_ops} memory-bound")
    table.add_column("op")
    table.add_column("count", justify="right")
    table.add_column("memory-bound")
    if share:
        table.add_column("time share", justify="right")
    for op, count in report.op_histogram.most_common():
        row = [op, str(count), "yes" if target.is_memory_bound(op) else ""]
        if share:
            row.append(f"{100 * share.get(op, 0):.1f}%")
        table.add_row(*row)
    console.print(table)
    console.print(f"parameters: {report.params:,}   file size: {report.file_size / 1e6:.2f} MB")
    for role in ("inputs", "outputs"):
        for t in io[role]:
            console.print(f"{role[:-1]} {t.name}: {t.dtype} {t.shape} {t.layout}, {t.value_range}")
    for key, value in report.extra.items():
        if key != "time_share":
            console.print(f"{key}: {value}")
