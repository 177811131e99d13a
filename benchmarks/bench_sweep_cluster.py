"""What a sweep of N cells costs on a Ray cluster, computed from a measured sweep.

Reads the per-cell stage times of a finished sweep (``results.json``: build+estimate
ran as Ray tasks or local processes, measure serially) and prints the wall time of a
``--cells``-cell sweep on 1, 2, 4, ... nodes of ``--cpus`` CPUs each: builds are
spread over every CPU (one per cell, ``--cell-threads 1``), measurements run one at a
time on the driver (``--measure-on driver``). The per-cell figures are this machine's
(its CPU flags and load are printed): run it on a sweep from your own nodes.

    .venv/bin/python benchmarks/bench_sweep_cluster.py OUT/results.json [--cells 1000] [--cpus 8]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
from pathlib import Path

from evit_export.core.jsonio import loads_strict
from evit_export.core.machine import cpu_flags, machine_description


def stage_seconds(results: dict, stage: str) -> list[float]:
    return [c["stages"][stage]["seconds"] for c in results["cells"]
            if c["status"] == "done" and c["stages"].get(stage, {}).get("seconds")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path, help="results.json of a finished sweep")
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--cpus", type=int, default=8, help="CPUs per node")
    ap.add_argument("--nodes", default="1,2,4,8,16,32")
    args = ap.parse_args()
    results = loads_strict(args.results.read_text())
    build, measure = stage_seconds(results, "build"), stage_seconds(results, "measure")
    if not build:
        raise SystemExit(f"{args.results} has no finished build stage: run a sweep first")
    print(f"machine: {machine_description()}; CPU flags: {' '.join(cpu_flags())}; "
          f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    b, m = statistics.mean(build), statistics.mean(measure) if measure else 0.0
    print(f"from {len(build)} cells of {args.results}: build+check {b:.1f} s per cell "
          f"(min {min(build):.1f}, max {max(build):.1f}), measure {m:.1f} s per cell")
    print(f"{args.cells} cells, {args.cpus} CPUs per node, measured on the driver one cell at a time:")
    print(f"{'nodes':>6} {'builds':>12} {'measure':>12} {'total':>12}")
    for n in (int(x) for x in args.nodes.split(",")):
        waves = math.ceil(args.cells / (n * args.cpus))
        builds, measures = waves * b, args.cells * m
        print(f"{n:>6} {builds / 3600:>10.2f} h {measures / 3600:>10.2f} h {(builds + measures) / 3600:>10.2f} h")


if __name__ == "__main__":
    main()
