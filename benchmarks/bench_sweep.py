"""Wall time of the full fp32 sweep: M0–M5 × onnx, coreml, tflite at 224 px with
``--jobs 2`` (goal: ≤ 15 minutes on a 2-core machine), run as a real ``evit-export
sweep`` process. Prints the CPU flags and load average beside the figure, and where
the time went (per stage, summed over cells).

    .venv/bin/python benchmarks/bench_sweep.py [--variants m0,m1] [--jobs 2] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evit_export.core.machine import cpu_flags
from evit_export.core.machine import machine_description

GOAL_MINUTES = 15.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="m0,m1,m2,m3,m4,m5")
    ap.add_argument("--targets", default="onnx,coreml,tflite")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="keep the sweep here (default: a temporary folder)")
    args = ap.parse_args()
    console = Console(width=160)
    console.print(f"machine: {machine_description()}; CPU flags: {' '.join(cpu_flags())}")
    console.print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} "
                  "(other work on the machine slows the sweep and its timings)")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "sweep"
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "evit_export", "sweep", "--variants", args.variants,
                              "--targets", args.targets, "--precisions", "fp32", "--jobs", str(args.jobs),
                              "--out", str(out)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if run.returncode != 0:
            console.print(run.stderr[-4000:])
            sys.exit(run.returncode)
        results = json.loads((out / "results.json").read_text())
    report(console, results, wall, args.jobs)


def report(console: Console, results: dict, wall: float, jobs: int) -> None:
    table = Table(title="sweep cells (seconds per stage; latency measured here, 1 thread, batch 1)")
    for col in ("cell", "verdict", "build s", "measure s", "latency ms", "runtime"):
        table.add_column(col, justify="right")
    totals: dict[str, float] = {}
    for c in results["cells"]:
        for stage, info in c["stages"].items():
            totals[stage] = totals.get(stage, 0.0) + info["seconds"]
        lat = c.get("latency") or {}
        table.add_row(c["id"], c.get("verdict") or c["status"], f"{c['stages'].get('build', {}).get('seconds', 0):.1f}",
                      f"{c['stages'].get('measure', {}).get('seconds', 0):.1f}",
                      f"{lat['median_ms']:.2f}" if lat.get("median_ms") is not None else "-",
                      lat.get("runtime") or "-")
    console.print(table)
    console.print("stage totals over all cells: " + ", ".join(f"{k} {v:.0f} s" for k, v in totals.items()))
    minutes = wall / 60
    console.print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    console.print(f"[bold]{len(results['cells'])} cells with --jobs {jobs}: {minutes:.1f} min wall[/] "
                  f"(goal ≤ {GOAL_MINUTES:.0f} min on 2 cores: {'met' if minutes <= GOAL_MINUTES else 'NOT met'})")


if __name__ == "__main__":
    main()
