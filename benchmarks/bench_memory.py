"""What the device pays, measured on this machine and planned from the graph.

For each variant: exports ONNX and TFLite (fp32, batch 1, seeded realistic weights),
then bench measures each artifact in a fresh process (load, first call, p50/p90/p99,
resident peak above the runtime's import, the runtime's own plan where it reports one),
beside the static plan from the graph (activation arena, weights). Optionally the
paper's comparison (``--compare``). Prints the tables with the CPU flags.

    .venv/bin/python benchmarks/bench_memory.py [--variants m0 m2 m5] [--iterations 30] [--compare]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from evit_export.validation.memory import static_memory
from rich.console import Console
from rich.table import Table

import evit_export
from evit_export.core.machine import cpu_flags, machine_description

console = Console(width=160)


def _mb(value) -> str:
    return f"{value / 1e6:.1f}" if isinstance(value, (int, float)) else "-"


def measured_table(variants: list[str], formats: list[str], iterations: int, folder: Path) -> Table:
    table = Table(title="MEASURED here, 1 thread, batch 1, each artifact in a fresh process")
    for col in ("artifact", "runtime", "load ms", "first ms", "p50 ms", "p90 ms", "p99 ms", "peak RSS MB",
                "runtime plan MB", "file MB"):
        table.add_column(col, justify="left" if col in ("artifact", "runtime") else "right")
    for variant in variants:
        model = evit_export.load_model(variant, seed=0)
        for fmt in formats:
            path = folder / f"{variant}.{fmt}"
            evit_export.export(model, fmt, out=path)
            (lat,) = evit_export.bench([path], threads=1, iterations=iterations)
            plan = (lat.memory or {}).get("runtime_plan") or {}
            table.add_row(path.name, lat.runtime, f"{lat.load_ms:.1f}", f"{lat.first_ms:.2f}", f"{lat.p50_ms:.2f}",
                          f"{lat.p90_ms:.2f}", f"{lat.p99_ms:.2f}", _mb(lat.peak_rss_bytes),
                          _mb(plan.get("planned_bytes")), _mb(path.stat().st_size))
    return table


def planned_table(variants: list[str]) -> Table:
    table = Table(title="PLANNED from the graph (224 px, batch 1): no device needed")
    for col in ("variant", "precision", "activations MB (ExecuTorch-style)", "packed MB", "live peak MB",
                "weights MB"):
        table.add_column(col, justify="left" if col in ("variant", "precision") else "right")
    for variant in variants:
        for precision in ("fp32", "int8"):
            plan = static_memory(variant, precision=precision)
            table.add_row(variant, precision, _mb(plan["activation_bytes"]), _mb(plan["packed_activation_bytes"]),
                          _mb(plan["peak_live_bytes"]), _mb(plan["weight_bytes"]))
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["m0", "m2", "m5"])
    ap.add_argument("--formats", nargs="+", default=["onnx", "tflite"])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--compare", action="store_true", help="also run the paper's comparison (a few minutes)")
    args = ap.parse_args()
    console.print(f"machine: {machine_description()}; CPU flags: {' '.join(cpu_flags()) or 'not reported'}",
                  highlight=False)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        console.print(measured_table(args.variants, args.formats, args.iterations, Path(scratch)))
    console.print(planned_table(args.variants))
    if args.compare:
        from evit_export.cli.compare import _print

        _print(evit_export.api.compare(iterations=10, progress=lambda m: console.print(f"[dim]{m}[/]")))


if __name__ == "__main__":
    main()
