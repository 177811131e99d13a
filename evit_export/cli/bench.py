"""``bench``: measured latency (on this machine, or on a device over SSH) and, kept
apart, simulated estimates for devices neither can reach."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List

import typer
from rich.table import Table

from evit_export.api import bench
from evit_export.cli import app, console, Flag, JsonFlag
from evit_export.core.interrupt import cancellable
from evit_export.core.jsonio import dumps_strict
from evit_export.targets import open_artifact
from evit_export.validation.latency import estimates_for, format_figures, require_fit
from evit_export.validation.latency.profiles import builtin_profiles, resolve_profile


@app.command("bench")
def bench_cmd(artifacts: List[Path] = typer.Argument(..., metavar="ARTIFACT...",
                                                     help="Artifacts to time side by side."),
              threads: int = typer.Option(1, "--threads", min=1, metavar="N",
                                          help="Runtime threads for the measurement (the paper's protocol: 1)."),
              iterations: int = typer.Option(30, "--iterations", min=1, metavar="N",
                                             help="Timed runs after the warm-up; the median and p90 are over these."),
              simulate: str = typer.Option("", "--simulate", metavar="DEVICES",
                                           help="Comma-separated device profiles (names or PROFILE.json; 'all' = "
                                           "every built-in one that runs the artifact's format and precision) to "
                                           "estimate on; a named one must run it (evit-export devices list)."),
              remote: str = typer.Option(None, "--remote", metavar="[USER@]HOST[:PORT]",
                                         help="Measure on this device over SSH instead of here."),
              identity: Path = typer.Option(None, "--identity", metavar="KEY", help="SSH private key."),
              remote_python: str = typer.Option("python3", "--remote-python", metavar="PATH",
                                                help="Python on the device (with its runtime installed)."),
              accept_new_host_key: bool = Flag(False, "--accept-new-host-key",
                                               help="Add an unknown host's key to known_hosts (a changed key is "
                                               "always refused)."),
              known_hosts: Path = typer.Option(None, "--known-hosts", metavar="FILE",
                                               help="Default: ~/.ssh/known_hosts."),
              as_json: bool = JsonFlag()):
    """Measured latency and memory of each artifact, here or --remote on a device over SSH.

    Load time, first inference, p50/p90/p99 and the peak resident memory the model adds
    (each artifact in a fresh process), with the runtime's own memory plan where it has one.

    --simulate adds estimates, kept apart, each with its profile's provenance and validation error.
    """

    with cancellable("bench"):  # measures only: nothing is written
        estimates = [_estimates(artifact, simulate) for artifact in artifacts]  # a profile that does not fit: no timing
        rows = []
        for artifact, estimated in zip(artifacts, estimates):
            rows += _measure(artifact, threads, iterations, remote, identity, remote_python, accept_new_host_key,
                             known_hosts)
            rows += estimated
    if as_json:
        sys.stdout.write(dumps_strict(rows, indent=2) + "\n")
        return
    _print(rows, threads)


def _measure(artifact, threads, iterations, remote, identity, remote_python, accept_new, known_hosts) -> list[dict]:
    artifact, target, spec = open_artifact(artifact)
    if remote:
        from evit_export.validation.latency.remote import RemoteHost, bench_remote

        lat = bench_remote(artifact, RemoteHost.parse(remote), identity=identity, remote_python=remote_python,
                           threads=threads, iterations=iterations, batch=spec.batch or 1,
                           accept_new_host_key=accept_new, known_hosts=known_hosts)
        return [{"artifact": artifact.name, **lat.to_dict()}]
    (lat,) = bench([artifact], threads=threads, iterations=iterations)
    return [{"artifact": artifact.name, **lat.to_dict()}]


def _estimates(artifact, simulate: str) -> list[dict]:
    names = [d.strip() for d in simulate.split(",") if d.strip()]
    if not names:
        return []

    artifact, target, spec = open_artifact(artifact)
    precision = target.precision_family(spec)
    named = [n for n in names if n != "all"]
    for name in named:  # 'all' takes the profiles that fit; a named one must fit (simulate's rule)
        require_fit(resolve_profile(name), target.name, precision, artifact.name)
    devices = named + (list(builtin_profiles()) if "all" in names else [])
    rows = estimates_for(spec, target.name, precision, list(dict.fromkeys(devices)))
    return [{"artifact": artifact.name, **row} for row in rows]


def _mb(value) -> str:
    return f"{value / 1e6:.1f}" if isinstance(value, (int, float)) else "-"


def _ms(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def _print(rows: list[dict], threads: int) -> None:
    measured = [r for r in rows if r["kind"] != "estimate"]
    machines = {r["machine"] for r in measured}
    one_machine = len(machines) == 1  # then it is said once, under the table
    table = Table(title=f"MEASURED latency and memory, {threads} thread(s)")
    for col in ("artifact", "runtime", "kind", "batch", "load ms", "first ms", "p50 ms", "p90 ms", "p99 ms",
                "img/s", "peak RSS MB", "runtime plan MB") + (() if one_machine else ("machine",)):
        table.add_column(col)
    for r in measured:
        plan = (r.get("memory") or {}).get("runtime_plan") or {}
        table.add_row(r["artifact"], r["runtime"], r["kind"], str(r["batch"]), _ms(r.get("load_ms")),
                      _ms(r.get("first_ms")), _ms(r.get("p50_ms", r["median_ms"])), _ms(r["p90_ms"]),
                      _ms(r.get("p99_ms")), f"{r['images_per_s']:.1f}", _mb(r.get("peak_rss_bytes")),
                      _mb(plan.get("planned_bytes")), *(() if one_machine else (r["machine"],)))
    console.print(table)
    if one_machine and measured:
        console.print(f"machine: {measured[0]['machine']}")
    methods = sorted({(r.get("memory") or {}).get("peak_rss") for r in measured} - {None})
    for method in methods:
        console.print(f"peak RSS: resident high-water mark above the process after the runtime's import: {method}")
    estimates = [r for r in rows if r["kind"] == "estimate"]
    if not estimates:
        return

    table = Table(title="ESTIMATED latency (simulated from device profiles, not measured)")
    for col in ("artifact", "device", "estimate ms", "rests on", "validation error"):
        table.add_column(col)
    for r in estimates:
        table.add_row(r["artifact"], r["device"], format_figures(r["median_ms"], r["significant_figures"]),
                      r["provenance"], r["validation_error"])
    console.print(table)
