"""``evit-export parity``"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from evit_export.cli import CheckpointOpt, app, console


@app.command("parity")
def parity_cmd(artifacts: List[Path] = typer.Argument(..., help=".onnx / .mlpackage / .tflite files of one model"),
               data: Optional[Path] = typer.Option(None, "--data", help="labelled images: DIR/val/<class>/* or "
                                                   "DIR/<class>/*; default for digits models: the embedded "
                                                   "digits val split"),
               checkpoint: Optional[str] = CheckpointOpt,
               limit: Optional[int] = typer.Option(None, "--limit", help="use only N images (stratified)"),
               threads: Optional[int] = typer.Option(None, "--threads"),
               verbose: bool = typer.Option(False, "--verbose", help="per-class accuracy deltas"),
               as_json: bool = typer.Option(False, "--json")):
    """Accuracy parity of artifacts against PyTorch on labelled images. Exit 0 when every
    |top-1 delta| is within tolerance (fp32/fp16 0.2 points, int8 1.5), 1 when not."""
    from evit_export.validation.parity import check_parity

    report = check_parity(artifacts, data, checkpoint, threads=threads, limit=limit)
    if as_json:
        d = report.to_dict()
        if not verbose:
            for row in [d["reference"], *d["artifacts"], *d["references"]]:
                row.pop("per_class_top1", None)
                row.pop("per_class_delta", None)
        sys.stdout.write(json.dumps(d, indent=2) + "\n")
        raise typer.Exit(0 if report.passed else 1)
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
    if verbose:
        per = Table(title="per-class top-1 (Δ vs PyTorch, points)")
        per.add_column("class")
        per.add_column("PyTorch", justify="right")
        for row in report.artifacts:
            per.add_column(Path(row.name).name, justify="right")
        for cls, acc in report.reference.per_class_top1.items():
            per.add_row(cls, f"{acc:.2f}%", *[f"{row.per_class_top1.get(cls, float('nan')):.2f}% "
                                              f"({row.per_class_delta.get(cls, float('nan')):+.2f})"
                                              for row in report.artifacts])
        console.print(per)
    failed = [r for r in report.artifacts if not r.passed]
    if failed:
        console.print("[red]FAIL[/]: " + "; ".join(f"{r.name}: Δ top-1 {r.delta_top1:+.2f} points exceeds "
                                                      f"±{r.tolerance:g}" for r in failed))
    raise typer.Exit(0 if report.passed else 1)
