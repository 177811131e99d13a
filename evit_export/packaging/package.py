"""App-integration packages: the model, labels, exact preprocessing, a real sample
image with the outputs it must give, app projects per target, a manifest with
checksums, equivalence and latency figures, and a readable report.

Written once against the target protocol: any artifact whose target can open a
Runner gets the same package; app projects come from the target's own ``app.py``
(see ``packaging/apps.py``).
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

from evit_export.core.atomic import atomic_path
from evit_export.core.jsonio import dumps_strict
from evit_export.packaging.apps import AppContext, chosen_apps, generic_note, write_apps
from evit_export.packaging.manifest import (
    MANIFEST,
    file_entries,
    portable_spec,
    scrub_paths,
    weights_record,
)
from evit_export.packaging.preprocessing import preprocessing_spec
from evit_export.packaging.sample import EXPECTED, SAMPLE, expected_record, sample_image
from evit_export.targets import RunnerOptions


def simulated_latencies(target, spec) -> list[dict]:
    """Estimates for the built-in device profiles that fit this artifact's format and
    precision (never an Android figure for a CoreML package), labelled as estimates,
    each with its profile's provenance and validation error."""
    from evit_export.validation.latency import estimates_for

    return estimates_for(spec, target.name, target.precision_family(spec))


def _measure(target, artifact, spec, threads, log) -> list[dict]:
    from evit_export.validation.latency.measure import measure_latency

    rows = []
    with target.open(artifact, spec, RunnerOptions(threads=threads)) as runner:
        if not runner.deployment_runtime:
            log(f"{runner.name} is a checker, not a deployment runtime: latency only simulated")
        else:
            log(f"measuring latency ({threads} thread{'s' if threads != 1 else ''})")
            rows.append(measure_latency(runner, batch=spec.batch or 1, threads=threads).to_dict())
    return rows + simulated_latencies(target, spec)


def build_package(artifact: str | Path, out: str | Path, checkpoint=None, images=None, threads: int = 1,
                  measure: bool = True, app: str = "auto", vendor_runtime: bool = False,
                  log=lambda msg: None) -> Path:
    """Write the package for ``artifact`` into ``out`` (replaced atomically)."""
    from evit_export.core.import_order import quiet_runtime_logs
    from evit_export.models.reference import reference_model
    from evit_export.packaging.weights import resolve_checkpoint
    from evit_export.targets import open_artifact
    from evit_export.targets.base import read_sidecar
    from evit_export.validation.check import check_artifact

    quiet_runtime_logs()  # TensorFlow/coremltools import chatter is not for the user
    artifact, target, spec = open_artifact(artifact)
    apps = chosen_apps(target.name, app)  # bad --app fails before any work
    out = Path(out)
    checkpoint = resolve_checkpoint(spec, checkpoint, artifact)
    log(f"checking {artifact} against PyTorch")
    report = check_artifact(artifact, checkpoint=checkpoint, images=images)
    reference = reference_model(spec, checkpoint)
    latencies = _measure(target, artifact, spec, threads, log) if measure else []
    image, description = sample_image(spec)
    with target.open(artifact, spec, RunnerOptions(threads=threads)) as runner:
        expected = expected_record(image, description, spec, reference, runner)
    portable = portable_spec(spec.to_dict())
    with atomic_path(out, directory=True) as tmp:
        tmp.mkdir(parents=True)
        if artifact.is_dir():
            shutil.copytree(artifact, tmp / artifact.name)
        else:
            shutil.copy2(artifact, tmp / artifact.name)
        (tmp / "labels.txt").write_text("\n".join(spec.labels) + "\n", encoding="utf-8")
        pre = preprocessing_spec(spec, target.input_quantization(artifact))
        (tmp / "preprocessing.json").write_text(dumps_strict(pre, indent=2) + "\n", encoding="utf-8")
        image.save(tmp / SAMPLE)
        (tmp / EXPECTED).write_text(dumps_strict(expected, indent=2) + "\n", encoding="utf-8")
        export_info = (read_sidecar(artifact) or {}).get("info", {})
        ctx = AppContext(tmp, artifact.name, spec, pre, expected, vendor_runtime=vendor_runtime,
                         export_info=export_info, log=log)
        usage = write_apps(ctx, target.name, app)
        (tmp / "INTEGRATION.md").write_text(render_integration(artifact.name, target.name, usage), encoding="utf-8")
        manifest = {
            "format": "evit-export package 2",
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "target": target.name,
            "model": artifact.name,
            "apps": list(apps),
            "weights": weights_record(spec.to_dict(), checkpoint),
            "spec": portable,
            "io": {k: [vars(t) for t in v] for k, v in target.describe(artifact).items()},
            "equivalence": report.to_dict(),
            "sample": {"image": SAMPLE, "top1": expected["pytorch"]["top5"][0]["label"],
                       "top1_agrees": expected["top1_agrees"]},
            "latency": latencies,
            # How the artifact was made (calibration, quantization, delegate verdicts), as
            # its exporter recorded it in the sidecar; absent for foreign artifacts.
            "export": export_info,
        }
        manifest = scrub_paths(manifest)
        (tmp / "REPORT.md").write_text(render_report(manifest), encoding="utf-8")
        manifest["files"] = file_entries(tmp)
        (tmp / MANIFEST).write_text(dumps_strict(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    return out


APP_TITLES = {"web": "Web page (onnxruntime-web, WebAssembly)", "python": "Python",
              "android": "Android library module (LiteRT)", "ios": "iOS / macOS Swift package (Vision + CoreML)"}


def render_integration(model_file: str, target_name: str, usage: dict[str, str]) -> str:
    lines = [f"# Using {model_file}", "",
             ("Every app below preprocesses exactly as `preprocessing.json` says (the checks used the same "
              "pixels) and is tested against `sample.png` / `expected.json`. "
              "`evit-export verify-package .` re-checks checksums, the embedded spec and the sample."), ""]
    if not usage:
        lines += [generic_note(target_name, model_file)]
    for kind, text in usage.items():
        lines += [f"## {APP_TITLES.get(kind, kind)}", "", text.rstrip(), ""]
    return "\n".join(lines) + "\n"


def render_report(manifest: dict) -> str:
    spec, eq = manifest["spec"], manifest["equivalence"]
    weights = manifest["weights"]
    lines = [
        f"# {manifest['model']}: EfficientViT-{spec['variant'].upper()} for {manifest['target']}",
        "",
        (f"- classes: {spec['num_classes']} · input {spec['img_size']}×{spec['img_size']} "
         f"({spec['input_layout']}, {spec['input_range']}, {spec['input_dtype']}) · precision {spec['precision']}"),
        f"- weights: {json.dumps(weights)}",
        f"- built {manifest['created']} with {', '.join(f'{k} {v}' for k, v in spec['toolchain'].items())}",
        f"- apps: {', '.join(manifest['apps']) or 'none (see INTEGRATION.md)'}",
    ]
    calibration = manifest.get("export", {}).get("calibration")
    if calibration:
        lines.append(f"- int8 calibration: {calibration['source']}")
    # Notes carry what a person shipping this must know (random weights, random
    # calibration, a partly-float int8 graph): they go first, not only in the JSON.
    if spec.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in spec["notes"]]
    sample = manifest["sample"]
    lines += [
        "",
        "## Numerical equivalence against PyTorch",
        "",
        f"Verdict: **{'PASS' if eq['passed'] else 'FAIL'}** ({eq['tolerance']}) on {eq['inputs']}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| max abs error | {eq['max_abs']:.3g} |",
        f"| mean abs error | {eq['mean_abs']:.3g} |",
        f"| cosine (min) | {eq['cosine_min']:.6f} |",
        f"| top-1 agreement | {100 * eq['top1_agreement']:.2f}% |",
        f"| top-5 agreement | {100 * eq['top5_agreement']:.2f}% |",
        "",
        (f"`sample.png`: PyTorch top-1 **{sample['top1']}**; the packaged model "
         f"{'agrees' if sample['top1_agrees'] else '**disagrees**'} (see `expected.json`)."),
    ]
    if eq.get("failures"):
        lines += ["", "Failures: " + "; ".join(eq["failures"])]
    lines += ["", "## Latency", ""]
    if manifest["latency"]:
        lines += ["| runtime | kind | batch | threads | median ms | p90 ms | img/s | machine |",
                  "|---|---|---|---|---|---|---|---|"]
        for lat in manifest["latency"]:
            kind = "**estimate**" if lat["kind"] == "estimate" else lat["kind"]
            machine = lat["machine"]
            if lat["kind"] == "estimate":  # what the estimate rests on, and how far to trust it
                machine += f" — rests on: {lat['provenance']}; validation: {lat['validation_error']}"
            lines.append(f"| {lat['runtime']} | {kind} | {lat['batch']} | {lat['threads'] or '-'} | "
                         f"{lat['median_ms']} | {lat['p90_ms'] or '-'} | {lat['images_per_s']} | {machine} |")
    else:
        lines.append("Not measured (`--no-latency`).")
    lines += ["", "## Files", "", ("`manifest.json` lists every file with its sha256; `INTEGRATION.md` shows each "
                                   "app; `preprocessing.json` is the exact preprocessing the checks used; "
                                   "`sample.png` + `expected.json` are what every app test classifies."), ""]
    return "\n".join(lines)
