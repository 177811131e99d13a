"""The default pipeline: a model, its deploy form, an artifact per target, a check
of each against PyTorch."""
from __future__ import annotations

from pathlib import Path


def artifact_size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def run_demo(out: Path, targets: list[str], log=print, seed: int = 0) -> list[dict]:
    from .pipeline import deploy_for_export
    from .targets import get_target
    from .validation.check import check_artifact

    out = Path(out)
    deployed, spec = deploy_for_export("m0", seed=seed)
    log(f"model: EfficientViT-M0, {spec.num_classes} classes, {spec.img_size}px, seeded weights (seed {seed})")
    suffix = {"onnx": ".onnx", "coreml": ".mlpackage", "tflite": ".tflite"}
    results = []
    for name in targets:
        target = get_target(name)
        path = out / f"m0{suffix[name]}"
        log(f"exporting {name} → {path}")
        target.export(deployed, spec, path)
        report = check_artifact(path)
        results.append({"target": name, "path": path, "size": artifact_size(path), "report": report})
    return results
