"""``package`` and ``bench``: app-integration packages and measured latency."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .cli import CheckpointOpt, app, console, err_console


@app.command("package")
def package_cmd(artifact: Path = typer.Argument(..., help="an artifact exported by evit-export"),
                out: Path = typer.Option(..., "--out", "-o", help="package folder to create (replaced atomically)"),
                checkpoint: Optional[str] = CheckpointOpt,
                images: Optional[Path] = typer.Option(None, "--images", help="also check on these images"),
                threads: int = typer.Option(1, "--threads", help="threads for the latency measurement"),
                latency: bool = typer.Option(True, "--latency/--no-latency")):
    """Write an app-integration package: model, labels, preprocessing, manifest, snippet, report."""
    from .package import build_package

    path = build_package(artifact, out, checkpoint=checkpoint, images=images, threads=threads,
                         measure=latency, log=lambda m: err_console.print(m))
    manifest = json.loads((path / "manifest.json").read_text())
    eq = manifest["equivalence"]
    console.print(f"wrote {path}/ ({len(manifest['files'])} files); equivalence "
                  f"{'PASS' if eq['passed'] else 'FAIL'}: max abs {eq['max_abs']:.2e}, "
                  f"top-1 agreement {100 * eq['top1_agreement']:.1f}%")
    for lat in manifest["latency"]:
        console.print(f"latency ({lat['kind']}, {lat['runtime']}, batch {lat['batch']}, {lat['threads']} thread): "
                      f"median {lat['median_ms']} ms, p90 {lat['p90_ms']} ms")
    raise typer.Exit(0 if eq["passed"] else 1)


@app.command("bench")
def bench_cmd(artifacts: List[Path] = typer.Argument(..., help="artifacts to time side by side"),
              threads: int = typer.Option(1, "--threads"),
              iterations: int = typer.Option(30, "--iterations"),
              as_json: bool = typer.Option(False, "--json")):
    """Measured latency of each artifact on this machine's runtimes."""
    from .errors import UserError
    from .targets import target_for
    from .validation.latency import measure_latency

    rows = []
    for artifact in artifacts:
        if not artifact.exists():
            raise UserError(f"artifact {artifact} does not exist: check the path")
        target = target_for(artifact)
        spec = target.read_spec(artifact)
        if spec is None:
            raise UserError(f"{artifact} carries no evit-export spec: export it with evit-export first")
        with target.open(artifact, spec=spec, threads=threads) as runner:
            lat = measure_latency(runner, batch=spec.batch or 1, threads=threads, iterations=iterations)
        rows.append({"artifact": str(artifact), **lat.to_dict()})
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title=f"measured latency, {threads} thread(s), {rows[0]['machine']}")
    for col in ("artifact", "runtime", "batch", "median ms", "p90 ms", "img/s"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["artifact"], r["runtime"], str(r["batch"]), f"{r['median_ms']:.2f}",
                      f"{r['p90_ms']:.2f}", f"{r['images_per_s']:.1f}")
    console.print(table)
