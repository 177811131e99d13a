"""What every export command prints after writing its artifact: where int8
calibration images came from, and the equivalence check's one-line verdict."""
from __future__ import annotations

from pathlib import Path

import typer

from evit_export.cli import console, err_console


def print_spec_notes(spec) -> None:
    for note in spec.notes:
        err_console.print(f"[yellow]note:[/] {note}")


def report_calibration(info: dict) -> None:
    """Where an int8 export's activation ranges came from; random data is a loud warning."""
    calib = info.get("calibration")
    if not calib:
        return
    if calib.get("random"):
        err_console.print(f"[bold red]WARNING:[/] {calib['warning']}")
    console.print(f"int8 calibration: {calib['source']}")


def check_after_export(artifact: Path, *, n: int = 32, runner_options=None) -> None:
    """The equivalence check every export command runs on what it wrote: one summary
    line, exit 1 when outside tolerance. Quantised models are judged on held-out real
    images (check_artifact's default). ``runner_options``: a ``RunnerOptions``."""
    from evit_export.validation.check import check_artifact

    report = check_artifact(artifact, n=n, runner_options=runner_options)
    status = "[green]PASS[/]" if report.passed else "[red]FAIL[/]: " + "; ".join(report.failures)
    console.print(f"equivalence vs PyTorch ({report.runtime}) on {report.inputs}: max abs {report.max_abs:.2e}, "
                  f"cosine min {report.cosine_min:.6f}, top-1 agreement {100 * report.top1_agreement:.1f}% {status}")
    if not report.passed:
        raise typer.Exit(1)
