"""``package``: app-integration packages."""
from __future__ import annotations

import enum
import json
from pathlib import Path

import typer

from evit_export.cli import CheckpointOpt, app, console, err_console


class AppKind(str, enum.Enum):
    auto = "auto"
    ios = "ios"
    android = "android"
    web = "web"
    python = "python"


@app.command("package")
def package_cmd(artifact: Path = typer.Argument(..., metavar="ARTIFACT", help="an artifact exported by evit-export"),
                out: Path = typer.Option(..., "--out", "-o", help="package folder to create (replaced atomically)"),
                app_kind: AppKind = typer.Option(AppKind.auto, "--app",
                                                 help="app project to write; auto: .onnx -> web + python, "
                                                 ".tflite -> android + python, .mlpackage -> ios"),
                vendor_runtime: bool = typer.Option(False, "--vendor-runtime",
                                                    help="web: copy onnxruntime-web's files into the package "
                                                    "(npm at package time) so the page works offline"),
                checkpoint: str | None = CheckpointOpt,
                images: Path | None = typer.Option(None, "--images", help="also check on these images"),
                threads: int = typer.Option(1, "--threads", help="threads for the latency measurement"),
                latency: bool = typer.Option(True, "--latency/--no-latency")):
    """Write an app-integration package: model, labels, exact preprocessing, sample image with expected outputs,
    app projects, manifest with checksums, report."""
    from evit_export.packaging.package import build_package

    path = build_package(artifact, out, checkpoint=checkpoint, images=images, threads=threads,
                         measure=latency, app=app_kind.value, vendor_runtime=vendor_runtime,
                         log=lambda m: err_console.print(m))
    manifest = json.loads((path / "manifest.json").read_text())
    eq = manifest["equivalence"]
    apps = ", ".join(manifest["apps"]) or "no app template (see INTEGRATION.md)"
    console.print(f"wrote {path}/ ({len(manifest['files'])} files; apps: {apps}); equivalence "
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
