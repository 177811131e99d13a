"""``evit-export demo``: the main job on the embedded default, end to end."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .cli import app, console, err_console


@app.command("demo")
def demo_cmd(out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="output folder"),
             targets: str = typer.Option("onnx", "--targets", help="comma-separated: onnx,coreml,tflite")):
    """Export EfficientViT-M0 through every target and verify each artifact."""
    from .demo import run_demo

    results = run_demo(out, [t.strip() for t in targets.split(",") if t.strip()],
                       log=lambda msg: err_console.print(msg))
    table = Table(title=f"evit-export demo → {out}")
    for col in ("artifact", "runtime", "precision", "size MB", "max abs err", "top-1 agree", "verdict"):
        table.add_column(col)
    failed = False
    for r in results:
        rep = r["report"]
        failed |= not rep.passed
        table.add_row(str(r["path"]), rep.runtime, rep.precision, f"{r['size'] / 1e6:.2f}",
                      f"{rep.max_abs:.2e}", f"{100 * rep.top1_agreement:.1f}%",
                      "[green]PASS[/]" if rep.passed else "[red]FAIL[/]")
    console.print(table)
    raise typer.Exit(1 if failed else 0)
