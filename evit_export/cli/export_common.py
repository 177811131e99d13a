"""What every export command does after checking its inputs: export, check before
publishing (``export_and_check``), and say where int8 calibration images came from
and the equivalence check's one-line verdict."""
from __future__ import annotations

from pathlib import Path

import typer

from evit_export.cli import console, err_console
from evit_export.api import export
from evit_export.targets import open_artifact
from evit_export.validation.check import check_artifact, real_images_required


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
    console.print(f"int8 calibration: {calib['source']}", highlight=False)
    for warning in calib.get("warnings") or []:  # too few images, nothing left to hold out
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    int8 = info.get("int8") or {}
    if int8.get("kept_float"):
        fast = set(int8.get("kept_float_for_speed") or [])
        kept = [f"{name} (faster in float here)" if name in fast else name for name in int8["kept_float"]]
        console.print(f"int8: kept in float: {', '.join(kept)}", highlight=False)


def export_and_check(target, deployed, options, runner_options, *, out: Path, check: bool = True, n: int = 32) -> None:
    """What every export command does once its inputs are checked: export, check the
    artifact against PyTorch before it is published (``api.export(check=True)``: Ctrl-C
    keeps the earlier file and says so), say what was written, and exit 1 when the check
    fails (the artifact stays, to be diagnosed). Quantised models are judged on real
    images: the calibration folder, else held-out digits for the digits model; with
    neither, the check is left to the user, saying how."""

    skipped = target.check_skip_reason(options, runner_options) if check else None
    images = getattr(options, "calibration_data", None)
    if images is not None and not Path(images).is_dir():
        images = None  # "random" calibration: nothing real to judge on
    artifact = export(deployed, target.name, options, out=out, check=check and not skipped, images=images, n=n,
                      runner_options=runner_options)
    for line in target.export_summary(artifact, options):
        console.print(line, highlight=False)
    print_spec_notes(artifact.spec)  # after the export: a bad input stays a one-line error
    report_calibration(artifact.info)
    if not check:
        return
    if skipped:
        err_console.print(f"[yellow]note:[/] equivalence check skipped: {skipped}")
        return
    report = artifact.info.get("equivalence")
    if report is None:
        err_console.print(f"[yellow]not checked:[/] an int8 model is judged on real images of its classes: run "
                          f"evit-export check {out.name} --images DIR", highlight=False)
        return
    _print_verdict(report)
    if not report["passed"]:
        raise typer.Exit(1)


def _print_verdict(report: dict) -> None:
    status = "[green]PASS[/]" if report["passed"] else "[red]FAIL[/]: " + "; ".join(report["failures"])
    sqnr = report.get("sqnr_db")
    sqnr_text = f", SQNR {sqnr:.1f} dB" if isinstance(sqnr, (int, float)) else ""
    console.print(f"equivalence vs PyTorch ({report['runtime']}) on {report['inputs']}: max abs "
                  f"{report['max_abs']:.2e}, cosine min {report['cosine_min']:.6f}{sqnr_text}, top-1 agreement "
                  f"{100 * report['top1_agreement']:.1f}% {status}")
    for note in report.get("notes") or []:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)


def check_after_export(artifact: Path, *, n: int = 32, images=None, runner_options=None) -> None:
    """The equivalence check of an artifact already published (the export commands use
    ``export_and_check``, which checks before publishing): one summary line, exit 1
    when outside tolerance. ``runner_options``: a ``RunnerOptions``."""

    if images is not None and not Path(images).is_dir():
        images = None  # "random" calibration: nothing real to judge on
    path, target, spec = open_artifact(artifact)
    if images is None and real_images_required(spec, target.precision_family(spec)):
        err_console.print(f"[yellow]not checked:[/] an int8 model is judged on real images of its classes: run "
                          f"evit-export check {path.name} --images DIR", highlight=False)
        return
    report = check_artifact(artifact, n=n, images=images, runner_options=runner_options)
    _print_verdict(report.to_dict())
    if not report.passed:
        raise typer.Exit(1)
