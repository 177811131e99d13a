"""``package``: app-integration packages."""
from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Optional

import typer

from evit_export.cli import CheckpointOpt, Flag, app, console, err_console
from evit_export.packaging.package import build_package
from evit_export.validation.latency import format_figures
from evit_export.targets import auto_apps_in_words


class AppKind(str, enum.Enum):
    auto = "auto"
    ios = "ios"
    android = "android"
    web = "web"
    python = "python"


@app.command("package")
def package_cmd(artifact: Path = typer.Argument(..., metavar="ARTIFACT", help="An artifact exported by evit-export."),
                out: Path = typer.Option(..., "--out", "-o", metavar="DIR",
                                         help="Package folder: a new or empty folder, or an earlier package "
                                         "(replaced atomically)."),
                app_kind: AppKind = typer.Option(AppKind.auto, "--app", metavar="APP",
                                                 help="App project to write: auto, ios, android, web or python. "
                                                 f"auto: {auto_apps_in_words()}."),
                vendor_runtime: bool = Flag(False, "--vendor-runtime",
                                            help="Web: copy onnxruntime-web's WebAssembly files into the package "
                                            "(npm at package time) so the page works offline."),
                checkpoint: Optional[str] = CheckpointOpt,
                images: Optional[Path] = typer.Option(None, "--images", metavar="DIR",
                                                      help="Also check on these images; the first becomes "
                                                      "the package's sample.png."),
                sample: Optional[Path] = typer.Option(None, "--sample", metavar="IMG",
                                                      help="The image the package ships as sample.png (default: "
                                                      "the first of --images, else a generated pattern)."),
                threads: int = typer.Option(1, "--threads", metavar="N",
                                            help="Threads for the latency measurement."),
                latency: bool = Flag(True, "--latency/--no-latency", help="Measure latency on this machine.")):
    """Write an app-integration package: model, labels, exact preprocessing, a sample image with its expected
    outputs, app projects, a manifest with checksums and a report."""

    path = build_package(artifact, out, checkpoint=checkpoint, images=images, threads=threads,
                         measure=latency, app=app_kind.value, vendor_runtime=vendor_runtime,
                         log=lambda m: err_console.print(m), sample=sample)
    manifest = json.loads((path / "manifest.json").read_text())
    eq = manifest["equivalence"]
    apps = ", ".join(manifest["apps"]) or "no app template (see INTEGRATION.md)"
    files = len(manifest["files"])
    console.print(f"wrote {path}/ ({files} file{'s' if files != 1 else ''}; apps: {apps}); equivalence "
                  f"{'PASS' if eq['passed'] else 'FAIL'}: max abs {eq['max_abs']:.2e}, "
                  f"top-1 agreement {100 * eq['top1_agreement']:.1f}%")
    console.print(f"sample.png: {manifest['sample']['description']}", highlight=False)
    for lat in manifest["latency"]:
        if lat["kind"] == "estimate":
            value = format_figures(lat["median_ms"], lat.get("significant_figures") or 2)
            console.print(f"latency ESTIMATE for {lat.get('device') or lat['runtime']}, batch {lat['batch']}: "
                          f"{value} ms (simulated, not measured; validation: {lat['validation_error']})")
        else:
            n = lat["threads"]
            console.print(f"latency (measured, {lat['runtime']}, batch {lat['batch']}, {n} thread"
                          f"{'s' if n != 1 else ''}): median {lat['median_ms']} ms, p90 {lat['p90_ms']} ms")
    raise typer.Exit(0 if eq["passed"] else 1)
