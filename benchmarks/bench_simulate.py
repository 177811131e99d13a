"""How good is the latency simulator? Compare its host-cpu-1t estimate with a
measured onnxruntime run (1 thread, batch 1) of the same deploy graph, per variant,
then print the mobile estimates (labelled as estimates).

    .venv/bin/python benchmarks/bench_simulate.py [--variants m0 m5]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evit_export.models.reference import deploy_for_export
from evit_export.targets import RunnerOptions
from evit_export.targets.onnx.exporter import export_onnx
from evit_export.validation.latency.measure import measure_latency
from evit_export.validation.latency.simulate import PROFILES, estimate_latency


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=["m0", "m1", "m2", "m3", "m4", "m5"])
    args = ap.parse_args()
    console = Console(width=200)
    table = Table(title="latency simulator vs measurement (batch 1)")
    for col in ("variant", "measured ORT 1t ms", "estimate host ms", "est/meas",
                *[f"{p} (estimate) ms" for p in PROFILES if p != "host-cpu-1t"]):
        table.add_column(col, justify="right")
    from evit_export.targets import get_target

    with tempfile.TemporaryDirectory() as d:
        for variant in args.variants:
            deployed, spec = deploy_for_export(variant, seed=0)
            art = export_onnx(deployed, spec, Path(d) / f"{variant}.onnx")
            with get_target("onnx").open(art.path, options=RunnerOptions(threads=1)) as runner:
                measured = measure_latency(runner, iterations=50).median_ms
            est = {p: estimate_latency(deployed, spec.img_size, p).estimate_ms for p in PROFILES}
            table.add_row(variant, f"{measured:.2f}", f"{est['host-cpu-1t']:.2f}",
                          f"{est['host-cpu-1t'] / measured:.2f}",
                          *[f"{est[p]:.2f}" for p in PROFILES if p != "host-cpu-1t"])
    console.print(table)


if __name__ == "__main__":
    main()
