"""The default pipeline, end to end: train (or reuse) EfficientViT-M0 on the
embedded digits, fold it, export every target, check each artifact against
PyTorch, measure accuracy parity on the held-out digits, and write an app package
per artifact."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# (target, file name, export options): the artifacts the demo ships.
DEMO_ARTIFACTS = (
    ("onnx", "m0_digits.onnx", {}),
    ("onnx", "m0_digits_int8.onnx", {"precision": "int8"}),  # static int8 for onnxruntime on CPU
    ("coreml", "m0_digits.mlpackage", {}),  # ML Program, fp16, image input, classifier
    ("tflite", "m0_digits.tflite", {}),  # fp32, NHWC
    ("tflite", "m0_digits_int8.tflite", {"quantize": "int8", "input_type": "uint8"}),
)


def artifact_size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


@dataclass
class DemoResult:
    checkpoint: Path
    val_top1: float | None
    artifacts: list[dict] = field(default_factory=list)
    parity: object = None


def run_demo(out: Path, targets: list[str], run_dir: Path = Path("runs/default"), log=print,
             package: bool = True) -> DemoResult:
    import json

    from evit_export.packaging.package import build_package
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets import get_target
    from evit_export.training import ensure_default_model
    from evit_export.validation.check import check_artifact
    from evit_export.validation.parity import check_parity

    out = Path(out)
    log(f"default model: EfficientViT-M0 on the embedded digits (run folder {run_dir})")
    checkpoint = ensure_default_model(run_dir)
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    val_top1 = (meta.get("metrics") or {}).get("val_top1")
    deployed, spec = deploy_for_export(None, checkpoint)
    result = DemoResult(checkpoint, val_top1)
    for target_name, filename, options in DEMO_ARTIFACTS:
        if target_name not in targets:
            continue
        path = out / filename
        log(f"exporting {target_name} {options or ''} → {path}")
        get_target(target_name).export(deployed, spec, path, **options)
        report = check_artifact(path)
        entry = {"target": target_name, "path": path, "size": artifact_size(path), "report": report}
        if package:
            entry["package"] = build_package(path, out / "packages" / path.name.replace(".", "-"), log=log)
        result.artifacts.append(entry)
    if result.artifacts:
        log("accuracy parity on the held-out digits")
        result.parity = check_parity([a["path"] for a in result.artifacts])
    return result
