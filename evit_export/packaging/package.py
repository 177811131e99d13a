"""App-integration packages: model, labels, preprocessing spec, manifest with
checksums, equivalence and latency figures, integration snippet, readable report.

Written once against the target protocol: any artifact whose target can open a
Runner gets the same package.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

from evit_export.core.atomic import atomic_path


def sha256_file(path: Path) -> str:
    from evit_export.models.checkpoint import _sha256

    return _sha256(Path(path))


def file_entries(root: Path) -> list[dict]:
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            out.append({"path": str(p.relative_to(root)), "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    return out


def preprocessing_spec(spec) -> dict:
    return {
        "color": "RGB",
        "resize": {"shorter_side": int(spec.img_size / spec.crop_pct), "interpolation": spec.interpolation},
        "center_crop": [spec.img_size, spec.img_size],
        "scale": 1 / 255,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "formula": "x = (pixel / 255 - mean) / std, per channel",
        "model_input": {"layout": spec.input_layout, "range": spec.input_range, "dtype": spec.input_dtype,
                        "note": {"normalized": "apply the formula above before feeding",
                                 "pixels": "feed RGB pixels 0..255; the formula is inside the model",
                                 "unit": "feed pixel / 255; mean/std are inside the model"}.get(spec.input_range, "")},
    }


# Devices whose latency a package estimates, by target (see validation/simulate.py).
SIMULATED_DEVICES = {"coreml": ("a13-ane-fp16", "a13-gpu-fp16", "a13-cpu-fp32"),
                     "tflite": ("android-midrange-cpu-4t",), "onnx": ()}


def simulated_latencies(target_name: str, spec, checkpoint=None) -> list[dict]:
    from evit_export.models.reference import reference_model
    from evit_export.validation.latency.simulate import estimate_latency

    devices = SIMULATED_DEVICES.get(target_name, ())
    if not devices:
        return []
    model = reference_model(spec, checkpoint)
    rows = []
    for device in devices:
        est = estimate_latency(model, spec.img_size, device, batch=spec.batch or 1)
        rows.append({"runtime": device, "kind": "estimate", "batch": est.batch, "threads": None,
                     "median_ms": est.estimate_ms, "p90_ms": None,
                     "images_per_s": round(est.batch / est.estimate_ms * 1e3, 1),
                     "machine": f"{est.description} (ESTIMATE: {est.assumptions})"})
    return rows


def build_package(artifact: str | Path, out: str | Path, checkpoint=None, images=None,
                  threads: int = 1, measure: bool = True, log=lambda msg: None) -> Path:
    from evit_export.packaging.snippets import SNIPPETS
    from evit_export.targets import open_artifact
    from evit_export.targets.base import read_sidecar
    from evit_export.validation.check import check_artifact
    from evit_export.validation.latency.measure import measure_latency

    artifact, target, spec = open_artifact(artifact)
    out = Path(out)
    log(f"checking {artifact} against PyTorch")
    report = check_artifact(artifact, checkpoint=checkpoint, images=images)
    latencies = []
    if measure:
        with target.open(artifact, spec=spec, threads=threads) as runner:
            if not runner.deployment_runtime:
                log(f"{runner.name} is a checker, not a deployment runtime: latency only simulated")
            else:
                log(f"measuring latency ({threads} thread{'s' if threads != 1 else ''})")
                latencies.append(measure_latency(runner, batch=spec.batch or 1, threads=threads).to_dict())
        latencies += simulated_latencies(target.name, spec, checkpoint)
    with atomic_path(out, directory=True) as tmp:
        tmp.mkdir(parents=True)
        dest = tmp / artifact.name
        if artifact.is_dir():
            shutil.copytree(artifact, dest)
        else:
            shutil.copy2(artifact, dest)
        (tmp / "labels.txt").write_text("\n".join(spec.labels) + "\n", encoding="utf-8")
        (tmp / "preprocessing.json").write_text(json.dumps(preprocessing_spec(spec), indent=2) + "\n")
        snippet = SNIPPETS[target.name](artifact.name, spec)
        (tmp / "INTEGRATION.md").write_text(f"# Using {artifact.name}\n\n{snippet}", encoding="utf-8")
        manifest = {
            "format": "evit-export package 1",
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "target": target.name,
            "model": artifact.name,
            "spec": spec.to_dict(),
            "io": {k: [vars(t) for t in v] for k, v in target.describe(artifact).items()},
            "equivalence": report.to_dict(),
            "latency": latencies,
            # How the artifact was made (calibration, quantization, delegate verdicts), as
            # its exporter recorded it in the sidecar; absent for foreign artifacts.
            "export": (read_sidecar(artifact) or {}).get("info", {}),
        }
        (tmp / "REPORT.md").write_text(render_report(manifest), encoding="utf-8")
        manifest["files"] = file_entries(tmp)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return out


def render_report(manifest: dict) -> str:
    spec, eq = manifest["spec"], manifest["equivalence"]
    lines = [
        f"# {manifest['model']}: EfficientViT-{spec['variant'].upper()} for {manifest['target']}",
        "",
        f"- classes: {spec['num_classes']} · input {spec['img_size']}×{spec['img_size']} "
        f"({spec['input_layout']}, {spec['input_range']}, {spec['input_dtype']}) · precision {spec['precision']}",
        f"- weights from: {json.dumps(spec.get('source', {}))}",
        f"- built {manifest['created']} with {', '.join(f'{k} {v}' for k, v in spec['toolchain'].items())}",
    ]
    calibration = manifest.get("export", {}).get("calibration")
    if calibration:
        lines.append(f"- int8 calibration: {calibration['source']}")
    # Notes carry what a person shipping this must know (random weights, random
    # calibration, a partly-float int8 graph): they go first, not only in the JSON.
    if spec.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in spec["notes"]]
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
    ]
    if eq.get("failures"):
        lines += ["", "Failures: " + "; ".join(eq["failures"])]
    lines += ["", "## Latency", ""]
    if manifest["latency"]:
        lines += ["| runtime | kind | batch | threads | median ms | p90 ms | img/s | machine |", "|---|---|---|---|---|---|---|---|"]
        for lat in manifest["latency"]:
            kind = "**estimate**" if lat["kind"] == "estimate" else lat["kind"]
            lines.append(f"| {lat['runtime']} | {kind} | {lat['batch']} | {lat['threads'] or '-'} | "
                         f"{lat['median_ms']} | {lat['p90_ms'] or '-'} | {lat['images_per_s']} | {lat['machine']} |")
    else:
        lines.append("Not measured (`--no-latency`).")
    lines += ["", "## Files", "", "See `manifest.json` for sizes and sha256 checksums; "
              "`INTEGRATION.md` shows how an app feeds the model; `preprocessing.json` is the exact "
              "preprocessing the checks used.", ""]
    return "\n".join(lines)
