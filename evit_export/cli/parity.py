"""``parity``: accuracy of artifacts against PyTorch on labelled images."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from evit_export.cli import CheckpointOpt, Flag, JsonFlag, ThreadsOpt, app, console
from evit_export.core.jsonio import dumps_strict
from evit_export import api
from evit_export.targets import suffixes_in_words


@app.command("parity")
def parity_cmd(artifacts: List[Path] = typer.Argument(..., metavar="ARTIFACT...",
                                                       help=f"Artifacts of one model ({suffixes_in_words()})."),
               data: Optional[Path] = typer.Option(None, "--data", metavar="DIR",
                                                   help="Labelled images, DIR/val/<class>/* or DIR/<class>/*; "
                                                   "default for digits models: the embedded digits' "
                                                   "validation split."),
               checkpoint: Optional[str] = CheckpointOpt,
               limit: Optional[int] = typer.Option(None, "--limit", metavar="N",
                                                   help="Use only N images (stratified over the classes)."),
               threads: Optional[int] = ThreadsOpt,
               verbose: bool = Flag(False, "--verbose", help="Also show per-class accuracy and deltas."),
               as_json: bool = JsonFlag()):
    """Accuracy parity of artifacts against PyTorch on labelled images.

    Exit 0 when every |top-1 delta| is within tolerance (fp32 and fp16 0.2 points, int8 1.5 points), 1 when not.
    """

    report = api.parity(artifacts, data=data, checkpoint=checkpoint, limit=limit, threads=threads)
    if as_json:
        d = report.to_dict()
        if not verbose:
            for row in [d["reference"], *d["artifacts"], *d["references"]]:
                row.pop("per_class_top1", None)
                row.pop("per_class_delta", None)
        sys.stdout.write(dumps_strict(d, indent=2) + "\n")
        raise typer.Exit(0 if report.passed else 1)
    _print_parity(report, verbose)
    failed = [r for r in report.artifacts if not r.passed]
    if failed:
        console.print("[red]FAIL[/]: " + "; ".join(f"{r.name}: Δ top-1 {r.delta_top1:+.2f} points exceeds "
                                                      f"±{r.tolerance:g}" for r in failed))
    raise typer.Exit(0 if report.passed else 1)


def _print_parity(report, verbose: bool) -> None:
    table = Table(title=f"accuracy parity on {report.images} images from {report.data}"
                        + (f" ({report.skipped} unreadable files skipped)" if report.skipped else ""))
    for col in ("model", "runtime", "precision", "top-1", "top-5", "agreement", "Δ top-1", "tolerance", "verdict"):
        table.add_column(col, justify="left" if col in ("model", "runtime", "verdict") else "right")
    for ref in report.references:
        table.add_row("PyTorch", "pytorch", "fp32", f"{ref.top1:.2f}%", f"{ref.top5:.2f}%", "", "", "", "")
    for row in report.artifacts:
        verdict = "[green]PASS[/]" if row.passed else "[red]FAIL[/]"
        table.add_row(row.name, row.runtime, row.precision, f"{row.top1:.2f}%", f"{row.top5:.2f}%",
                      f"{row.agreement:.2f}%", f"{row.delta_top1:+.2f}", f"±{row.tolerance:g}", verdict)
    console.print(table)
    if not verbose:
        return
    per = Table(title="per-class top-1 (Δ vs PyTorch, points)")
    per.add_column("class")
    per.add_column("PyTorch", justify="right")
    for row in report.artifacts:
        per.add_column(Path(row.name).name, justify="right")
    for cls, acc in report.reference.per_class_top1.items():
        cells = [f"{row.per_class_top1[cls]:.2f}% ({row.per_class_delta[cls]:+.2f})" if cls in row.per_class_top1
                 else "-" for row in report.artifacts]
        per.add_row(cls, f"{acc:.2f}%", *cells)
    console.print(per)
