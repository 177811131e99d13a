"""``simulate``: estimated latency of EfficientViT variants, timm models or exported
artifacts on a device profile (an estimate, never a measurement)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List

import typer
from rich.table import Table

from evit_export.cli import CheckpointOpt, JsonFlag, app, console
from evit_export.core.jsonio import dumps_strict


@app.command("simulate")
def simulate_cmd(models: List[str] = typer.Argument(..., metavar="MODEL...",
                                                    help="m0..m5, timm:<name> (random weights) or an artifact."),
                 device: List[str] = typer.Option(..., "--device", metavar="NAME|PROFILE.json",
                                                  help="Device profile (evit-export devices list); repeatable."),
                 img_size: int = typer.Option(None, "--img-size", metavar="PIXELS",
                                              help="Input size; default: the model's own."),
                 batch: int = typer.Option(None, "--batch", min=1, metavar="N", help="Default: 1 (artifact: its own)."),
                 checkpoint: Path = CheckpointOpt,
                 as_json: bool = JsonFlag()):
    """Estimate latency on device profiles (never a measurement).

    Each estimate has a per-op-class breakdown, the profile's provenance and its validation error.
    """
    from evit_export.validation.latency.profiles import resolve_profile
    from evit_export.validation.latency.simulate import estimate
    from evit_export.validation.latency.workloads import features

    profiles = [resolve_profile(d) for d in device]
    rows = []
    for ref in models:
        label, size, model_batch, feats = features(ref, img_size, batch, checkpoint)
        for profile in profiles:
            rows.append(estimate(feats, profile, label, size, model_batch).to_dict()
                        | {"total_gmacs": round(feats.total_macs / 1e9, 4)})
    if as_json:
        sys.stdout.write(dumps_strict(rows, indent=2) + "\n")
        return
    table = Table(title="simulated latency (ESTIMATES from device profiles, not measurements)")
    for col in ("model", "px", "batch", "device", "estimate ms", "largest classes (ms)"):
        table.add_column(col, justify="right" if col in ("px", "batch", "estimate ms") else "left")
    for r in rows:
        top = sorted(r["breakdown_ms"].items(), key=lambda kv: -kv[1])[:3]
        table.add_row(r["model"], str(r["img_size"]), str(r["batch"]), r["device"], f"{r['estimate_ms']:.2f}",
                      ", ".join(f"{k} {v:.2f}" for k, v in top))
    console.print(table)
    for profile in profiles:
        console.print(f"{profile.name}: {profile.provenance()}; error: {profile.error_summary()}", highlight=False)
