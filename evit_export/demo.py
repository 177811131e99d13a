"""The default pipeline, end to end: train (or reuse) EfficientViT-M0 on the
embedded digits, fold it, export every target, check each artifact against
PyTorch, measure accuracy parity on the held-out digits, write an app package
per artifact, and a report.html over the artifacts (the sweep's report)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evit_export.core.machine import cpu_flags, machine_description
from evit_export.models.reference import deploy_for_export
from evit_export.packaging.package import build_package
from evit_export.packaging.report import write_report
from evit_export.sweep.results import SCHEMA_VERSION, artifact_size, new_record, utc_now
from evit_export.sweep.stages import (CellContext, device_info, equivalence_fields, known_devices, parity_fields,
                                      record_artifact, stage_estimate, stage_measure)
from evit_export.targets import get_target
from evit_export.training import ensure_default_model
from evit_export.validation.check import check_artifact
from evit_export.validation.parity import check_parity

# (target, file name, export options): the artifacts the demo ships.
DEMO_ARTIFACTS = (
    ("onnx", "m0_digits.onnx", {}),
    ("onnx", "m0_digits_int8.onnx", {"precision": "int8"}),  # static int8 for onnxruntime on CPU
    ("coreml", "m0_digits.mlpackage", {}),  # ML Program, fp16, image input, classifier
    ("tflite", "m0_digits.tflite", {}),  # fp32, NHWC
    ("tflite", "m0_digits_int8.tflite", {"precision": "int8", "input_type": "uint8"}),
)


@dataclass
class DemoResult:
    checkpoint: Path
    val_top1: float | None
    artifacts: list[dict] = field(default_factory=list)
    parity: object = None
    report: Path | None = None


def run_demo(out: Path, targets: list[str], run_dir: Path = Path("runs/default"), log=print,
             package: bool = True) -> DemoResult:
    import json


    out = Path(out)
    known = sorted({name for name, _, _ in DEMO_ARTIFACTS})
    unknown = [t for t in targets if t not in known]
    if unknown or not targets:
        from evit_export.core.errors import UserError

        raise UserError(f"unknown demo target(s) {', '.join(unknown) or '(none given)'}: choose from "
                        f"{', '.join(known)}")
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
        target = get_target(target_name)
        target.export(deployed, spec, path, target.options_type(**options))
        report = check_artifact(path)
        entry = {"target": target_name, "path": path, "size": artifact_size(path), "report": report}
        if package:
            entry["package"] = build_package(path, out / "packages" / path.name.replace(".", "-"), log=log)
        result.artifacts.append(entry)
    if result.artifacts:
        log("accuracy parity on the held-out digits")
        result.parity = check_parity([a["path"] for a in result.artifacts])
        log("latency on this machine and simulated devices → report.html")
        result.report = write_demo_report(out, result, deployed, spec)
    return result


def write_demo_report(out: Path, result: DemoResult, deployed, spec) -> Path:
    """report.html over the demo's artifacts, in the sweep's record schema: check and
    parity figures from the demo, latency measured here (one artifact at a time) and
    estimated on every device profile that runs the artifact."""

    devices = known_devices()
    config = {"weights": {spec.variant: str(result.checkpoint)}, "simulate": devices, "threads": 1}
    rows = {Path(r.name).name: r for r in result.parity.artifacts}
    cells = []
    for entry in result.artifacts:
        target = get_target(entry["target"])
        path = Path(entry["path"])
        artifact_spec = target.read_spec(path)
        rec = new_record(spec.variant, entry["target"], target.precision_family(artifact_spec))
        rec.update(precision_label=artifact_spec.precision, artifact=path.name, started_at=utc_now(),
                   status="done")
        ctx = CellContext(rec, config, out, deployed=(deployed, spec))
        record_artifact(ctx, target, path)
        rec["equivalence"] = equivalence_fields(entry["report"], ctx)
        rec["parity"] = parity_fields(result.parity, rows[path.name], "embedded digits, val split")
        stage_estimate(ctx)
        stage_measure(ctx)
        rec["finished_at"] = utc_now()
        rec["verdict"] = "pass" if rec["equivalence"]["passed"] and rec["parity"]["passed"] else "fail"
        cells.append(rec)
    devices = [d for d in devices if any(d in c["estimates"] for c in cells)]  # plots with points only
    results = {"schema": SCHEMA_VERSION, "tool": "evit-export demo",
               "config": {"variants": [spec.variant], "targets": sorted({c["target"] for c in cells}),
                          "precisions": sorted({c["precision"] for c in cells}),
                          "weights": {spec.variant: Path(result.checkpoint).name},
                          "data": "embedded digits (val split)", "calibration_data": "embedded digits (train split)",
                          "simulate": devices, "img_size": spec.img_size, "threads": 1},
               "title": f"EfficientViT-{spec.variant.upper()} demo: its artifacts side by side",
               "machine": {"description": machine_description(), "cpu_flags": cpu_flags()},
               "devices": {d: device_info(d) for d in devices},
               "started_at": cells[0]["started_at"], "updated_at": utc_now(), "complete": True, "cells": cells}
    return write_report(out, results)
