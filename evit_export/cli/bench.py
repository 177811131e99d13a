"""``bench``: measured latency on this machine's runtimes, estimates for devices it cannot reach."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List

import typer
from rich.table import Table

from evit_export.cli import app, console


@app.command("bench")
def bench_cmd(artifacts: List[Path] = typer.Argument(..., help="artifacts to time side by side"),
              threads: int = typer.Option(1, "--threads"),
              iterations: int = typer.Option(30, "--iterations"),
              simulate: str = typer.Option("", "--simulate", help="comma-separated device profiles to "
                                           "estimate (see --list-devices), e.g. a13-ane-fp16"),
              list_devices: bool = typer.Option(False, "--list-devices"),
              as_json: bool = typer.Option(False, "--json")):
    """Measured latency of each artifact on this machine's runtimes; simulated
    latency (labelled as an estimate) for mobile devices with --simulate."""
    from evit_export.validation.latency.simulate import PROFILES

    if list_devices:
        for p in PROFILES.values():
            console.print(f"{p.name}: {p.description} — {p.source}")
        return
    from evit_export.core.errors import UserError
    from evit_export.targets import RunnerOptions, open_artifact
    from evit_export.validation.latency.measure import measure_latency

    rows = []
    for artifact in artifacts:
        artifact, target, spec = open_artifact(artifact)
        with target.open(artifact, spec=spec, options=RunnerOptions(threads=threads)) as runner:
            lat = measure_latency(runner, batch=spec.batch or 1, threads=threads, iterations=iterations)
            if not runner.deployment_runtime:
                lat.kind = "measured (checker, not a device runtime)"
        rows.append({"artifact": str(artifact), **lat.to_dict()})
        for device in [d.strip() for d in simulate.split(",") if d.strip()]:
            if device not in PROFILES:
                raise UserError(f"unknown device profile {device!r}: choose from {', '.join(PROFILES)}")
            from evit_export.models.reference import reference_model
            from evit_export.validation.latency.simulate import estimate_latency

            est = estimate_latency(reference_model(spec), spec.img_size, device, batch=spec.batch or 1)
            rows.append({"artifact": str(artifact), "runtime": f"{device} (ESTIMATE)", "batch": est.batch,
                         "median_ms": est.estimate_ms, "p90_ms": float("nan"),
                         "images_per_s": round(est.batch / est.estimate_ms * 1e3, 1), "kind": "estimate",
                         "machine": est.description, "assumptions": est.assumptions})
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title=f"latency, {threads} thread(s), measured on {rows[0]['machine']}")
    for col in ("artifact", "runtime / device", "kind", "batch", "median ms", "p90 ms", "img/s"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["artifact"], r["runtime"], r["kind"], str(r["batch"]), f"{r['median_ms']:.2f}",
                      f"{r['p90_ms']:.2f}" if r["p90_ms"] == r["p90_ms"] else "-", f"{r['images_per_s']:.1f}")
    console.print(table)
    if any(r["kind"] == "estimate" for r in rows):
        console.print("estimates come from a per-op roofline on assumed device profiles "
                      "(evit_export/validation/simulate.py), not from a device")
