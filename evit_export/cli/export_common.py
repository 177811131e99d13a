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


def check_after_export(artifact: Path, *, n: int = 32, images=None, runner_options=None) -> None:
    """The equivalence check every export command runs on what it wrote: one summary
    line, exit 1 when outside tolerance. Quantised models are judged on real images:
    ``images`` (the calibration folder), else held-out digits for the digits model;
    with neither, the check is left to the user, saying how. ``runner_options``: a
    ``RunnerOptions``."""
    from evit_export.targets import open_artifact
    from evit_export.validation.check import check_artifact, real_images_required

    if images is not None and not Path(images).is_dir():
        images = None  # "random" calibration: nothing real to judge on
    path, target, spec = open_artifact(artifact)
    if images is None and real_images_required(spec, target.precision_family(spec)):
        err_console.print(f"[yellow]not checked:[/] an int8 model is judged on real images of its classes: run "
                          f"evit-export check {path.name} --images DIR", highlight=False)
        return
    report = check_artifact(artifact, n=n, images=images, runner_options=runner_options)
    status = "[green]PASS[/]" if report.passed else "[red]FAIL[/]: " + "; ".join(report.failures)
    console.print(f"equivalence vs PyTorch ({report.runtime}) on {report.inputs}: max abs {report.max_abs:.2e}, "
                  f"cosine min {report.cosine_min:.6f}, top-1 agreement {100 * report.top1_agreement:.1f}% {status}")
    if not report.passed:
        raise typer.Exit(1)
