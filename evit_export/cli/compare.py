"""``compare``: the paper's CPU comparison (batch 16, one thread, onnxruntime), redone here."""
from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from evit_export.cli import JsonFlag, app, console, err_console
from evit_export.core.errors import UserError
from evit_export.core.jsonio import dumps_strict
from evit_export.api import compare
from evit_export.core.atomic import write_text_atomic
from evit_export.validation.compare import plot_comparison


def _names(text: str, flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"{flag} names nothing: pass comma-separated names")
    return names


@app.command("compare")
def compare_cmd(variants: str = typer.Option("m2,m5", "--variants", metavar="LIST",
                                             help="Comma-separated EfficientViT variants (m0 to m5)."),
                baselines: str = typer.Option(None, "--baselines", metavar="LIST",
                                              help="Comma-separated timm models; default: the paper's ONNX table "
                                              "rows timm has (mobilenetv3_large_100, mobilevit_xxs, "
                                              "efficientnet_b0, mobilenetv2_100)."),
                batch: int = typer.Option(16, "--batch", min=1, metavar="N", help="Batch size (the paper's: 16)."),
                threads: int = typer.Option(1, "--threads", min=1, metavar="N",
                                            help="onnxruntime threads (the paper's: 1)."),
                iterations: int = typer.Option(10, "--iterations", min=1, metavar="N",
                                               help="Timed runs per model after the warm-up."),
                out: Path = typer.Option(None, "--out", metavar="DIR",
                                         help="Also write compare.json and compare.png (throughput against "
                                         "peak memory) into DIR."),
                as_json: bool = JsonFlag()):
    """The paper's CPU comparison on this machine: EfficientViT against timm baselines.

    Batch 16, one thread, onnxruntime; baselines with randomised BatchNorm exported by hand
    (torch.onnx.export + onnxsim). Prints throughput, peak memory and each pair's ratio
    beside the paper's.
    """

    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: pass a folder")
    progress = None if as_json else (lambda message: err_console.print(f"[dim]{message}[/]"))
    result = compare(_names(variants, "--variants"), _names(baselines, "--baselines") if baselines else None,
                     batch=batch, threads=threads, iterations=iterations, progress=progress)
    if out is not None:
        _write(result, out)
    if as_json:
        sys.stdout.write(dumps_strict(result.to_dict(), indent=2) + "\n")
        return
    _print(result)


def _write(result, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "compare.json", dumps_strict(result.to_dict(), indent=2) + "\n")
    plot_comparison(result, out / "compare.png")


def _print(result) -> None:
    table = Table(title=f"onnxruntime, batch {result.batch}, {result.threads} thread(s): MEASURED here")
    for col in ("model", "role", "params M", "img/s", "p50 ms", "load ms", "peak RSS MB"):
        table.add_column(col, justify="left" if col in ("model", "role") else "right")
    for r in result.rows:
        table.add_row(r.model, r.role, f"{r.params / 1e6:.1f}", f"{r.images_per_s:.1f}", f"{r.p50_ms:.1f}",
                      f"{r.load_ms:.0f}" if r.load_ms is not None else "-",
                      f"{r.peak_rss_bytes / 1e6:.1f}" if r.peak_rss_bytes is not None else "-")
    console.print(table)
    ratios = Table(title="throughput ratio EfficientViT / baseline: measured here vs the paper (Xeon E5-2690 v4)")
    for col in ("EfficientViT", "baseline", "measured", "paper ONNX", "paper CPU"):
        ratios.add_column(col, justify="left" if col in ("EfficientViT", "baseline") else "right")
    for r in result.ratios:
        ratios.add_row(r["efficientvit"], r["baseline"], f"{r['measured']:.3f}",
                       f"{r['paper_onnx']:.3f}" if r["paper_onnx"] else "not published",
                       f"{r['paper_cpu']:.3f}" if r["paper_cpu"] else "not published")
    console.print(ratios)
    console.print(f"machine: {result.machine}; CPU flags: {' '.join(result.cpu_flags) or 'not reported'}",
                  highlight=False)
