"""``evit-export demo``: the main job on the embedded default, end to end."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from evit_export.cli import app, console, err_console


@app.command("demo")
def demo_cmd(out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="output folder"),
             run_dir: Path = typer.Option(Path("runs/default"), "--run-dir",
                                          help="training run to reuse (trained here when missing)"),
             targets: str = typer.Option("onnx,coreml,tflite", "--targets", help="comma-separated targets"),
             package: bool = typer.Option(True, "--package/--no-package", help="write app packages")):
    """Train (or reuse) M0 on the embedded digits, export every target, verify, package."""
    from evit_export.demo import run_demo

    result = run_demo(out, [t.strip() for t in targets.split(",") if t.strip()], run_dir=run_dir,
                      log=lambda msg: err_console.print(msg), package=package)
    top1 = f"{result.val_top1:.2f}%" if result.val_top1 is not None else "?"
    console.print(f"model: {result.checkpoint} (val top-1 {top1})")
    table = Table(title=f"artifacts in {out}: numerical equivalence vs PyTorch")
    for col in ("artifact", "runtime", "precision", "MB", "max abs err", "cosine", "top-1 agree", "verdict"):
        table.add_column(col)
    failed = False
    for a in result.artifacts:
        rep = a["report"]
        failed |= not rep.passed
        table.add_row(a["path"].name, rep.runtime, rep.precision, f"{a['size'] / 1e6:.2f}", f"{rep.max_abs:.2e}",
                      f"{rep.cosine_min:.6f}", f"{100 * rep.top1_agreement:.1f}%",
                      "[green]PASS[/]" if rep.passed else "[red]FAIL[/]")
    console.print(table)
    if result.parity is not None:
        p = result.parity
        table = Table(title=f"accuracy parity on {p.data} ({p.images} images)")
        for col in ("model", "runtime", "top-1 %", "Δ top-1", "agreement %", "verdict"):
            table.add_column(col)
        table.add_row("pytorch", "pytorch", f"{p.reference.top1:.2f}", "", "", "")
        for r in p.artifacts:
            failed |= not r.passed
            table.add_row(Path(r.name).name, r.runtime, f"{r.top1:.2f}", f"{r.delta_top1:+.2f}",
                          f"{r.agreement:.2f}", "[green]PASS[/]" if r.passed else "[red]FAIL[/]")
        console.print(table)
    for a in result.artifacts:
        if "package" in a:
            console.print(f"app package: {a['package']}/ (REPORT.md, INTEGRATION.md, manifest.json)")
    if result.report is not None:
        console.print(f"report: {result.report} (open it in a browser)")
    raise typer.Exit(1 if failed else 0)
