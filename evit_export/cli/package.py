"""``package``: app-integration packages."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from evit_export.cli import CheckpointOpt, app, console, err_console


@app.command("package")
def package_cmd(artifact: Path = typer.Argument(..., help="an artifact exported by evit-export"),
                out: Path = typer.Option(..., "--out", "-o", help="package folder to create (replaced atomically)"),
                checkpoint: Optional[str] = CheckpointOpt,
                images: Optional[Path] = typer.Option(None, "--images", help="also check on these images"),
                threads: int = typer.Option(1, "--threads", help="threads for the latency measurement"),
                latency: bool = typer.Option(True, "--latency/--no-latency")):
    """Write an app-integration package: model, labels, preprocessing, manifest, snippet, report."""
    from evit_export.packaging.package import build_package

    path = build_package(artifact, out, checkpoint=checkpoint, images=images, threads=threads,
                         measure=latency, log=lambda m: err_console.print(m))
    manifest = json.loads((path / "manifest.json").read_text())
    eq = manifest["equivalence"]
    console.print(f"wrote {path}/ ({len(manifest['files'])} files); equivalence "
                  f"{'PASS' if eq['passed'] else 'FAIL'}: max abs {eq['max_abs']:.2e}, "
                  f"top-1 agreement {100 * eq['top1_agreement']:.1f}%")
    for lat in manifest["latency"]:
        if lat["kind"] == "estimate":
            console.print(f"latency ESTIMATE for {lat['runtime']}, batch {lat['batch']}: {lat['median_ms']} ms "
                          "(simulated, not measured)")
        else:
            console.print(f"latency (measured, {lat['runtime']}, batch {lat['batch']}, {lat['threads']} thread): "
                          f"median {lat['median_ms']} ms, p90 {lat['p90_ms']} ms")
    raise typer.Exit(0 if eq["passed"] else 1)
