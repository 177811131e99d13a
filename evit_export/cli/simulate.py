"""``simulate``: estimated latency of EfficientViT variants, timm models or exported
artifacts on device profiles (an estimate, never a measurement): a thin shell over
``evit_export.api.simulate``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List

import typer
from rich.table import Table

from evit_export.cli import CheckpointOpt, JsonFlag, app, console
from evit_export.core.jsonio import dumps_strict
from evit_export.api import simulate
from evit_export.core.interrupt import cancellable
from evit_export.validation.latency import format_figures
from evit_export.validation.latency.profiles import resolve_profile


def device_names(values: list[str]) -> list[str]:
    """``--device a,b --device c`` -> [a, b, c], each once."""
    return list(dict.fromkeys(name.strip() for value in values for name in value.split(",") if name.strip()))


@app.command("simulate")
def simulate_cmd(models: List[str] = typer.Argument(..., metavar="MODEL...",
                                                    help="m0..m5, timm:<name> (random weights) or an artifact."),
                 device: List[str] = typer.Option(..., "--device", metavar="DEVICES",
                                                  help="Comma-separated device profiles (names or PROFILE.json; "
                                                  "evit-export devices list); repeatable. An artifact is priced "
                                                  "only on profiles of its format and precision."),
                 img_size: int = typer.Option(None, "--img-size", metavar="PIXELS",
                                              help="Input size; default: the model's own."),
                 batch: int = typer.Option(None, "--batch", min=1, metavar="N", help="Default: 1 (artifact: its own)."),
                 checkpoint: Path = CheckpointOpt,
                 as_json: bool = JsonFlag()):
    """Estimate latency on device profiles (never a measurement).

    Each estimate has a per-op-class breakdown, the profile's provenance and its validation error, and is rounded
    to the significant figures that error supports. Memory (activation arena, weights) is planned from the graph at
    the precision the profile runs.
    """

    names = device_names(device)
    profiles = [resolve_profile(name) for name in names]
    rows = []
    with cancellable("simulate"):  # estimates only: nothing is written but the cache of recorded op counts
        for ref in models:
            rows += [est.to_dict() for est in simulate(ref, names, img_size=img_size, batch=batch,
                                                       checkpoint=checkpoint)]
    if as_json:
        sys.stdout.write(dumps_strict(rows, indent=2) + "\n")
        return
    table = Table(title="simulated latency (estimates from device profiles, not measurements)")
    numeric = ("px", "batch", "estimate ms", "activ. MB", "weights MB")
    for col in ("model", "px", "batch", "device", "estimate ms", "activ. MB", "weights MB", "largest classes (ms)"):
        table.add_column(col, justify="right" if col in numeric else "left")
    for r in rows:
        figures = r["significant_figures"]
        top = sorted(r["breakdown_ms"].items(), key=lambda kv: -kv[1])[:3]
        memory = r["memory"]
        table.add_row(r["model"], str(r["img_size"]), str(r["batch"]), r["device"],
                      format_figures(r["estimate_ms"], figures), f"{memory['activation_bytes'] / 1e6:.2f}",
                      f"{memory['weight_bytes'] / 1e6:.2f}", ", ".join(f"{k} {v:g}" for k, v in top))
    console.print(table)
    console.print("memory: planned from the graph at the profile's precision (activation arena, weights); "
                  "kernel scratch and the runtime itself come on top", highlight=False)
    for profile in profiles:
        console.print(f"{profile.name}: {profile.provenance()}; error: {profile.error_summary()}", highlight=False)
