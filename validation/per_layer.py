"""``check --per-layer``: where int8 breaks. Every quantized tensor of an int8 artifact
against the same tensor of a float export of its PyTorch model, on real images: SQNR
and cosine, ranked worst first, with the op kind and the deploy-model block it belongs
to (the same block names for every format), plus a per-block summary.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError

from evit_export.validation.check import _artifact_and_spec, calibration_of, comparison_inputs

PER_LAYER_IMAGES = 32  # enough for stable per-tensor SQNR, few enough to keep every tensor in memory


@dataclass
class PerLayerReport:
    artifact: str
    precision: str
    inputs: str
    layers: list[dict] = field(default_factory=list)  # worst first: tensor, block, op, sqnr_db, cosine
    blocks: list[dict] = field(default_factory=list)  # per block: worst and median SQNR, tensor count

    def to_dict(self) -> dict:
        return asdict(self)


def _sort_key(row: dict) -> float:
    return row["sqnr_db"] if row["sqnr_db"] is not None else float("inf")


def summarise_blocks(layers: list[dict]) -> list[dict]:
    by_block: dict[str, list[dict]] = {}
    for row in layers:
        by_block.setdefault(row["block"], []).append(row)
    out = []
    for block, rows in by_block.items():
        finite = [r["sqnr_db"] for r in rows if r["sqnr_db"] is not None]
        worst = min(rows, key=_sort_key)
        out.append({"block": block, "tensors": len(rows), "worst_sqnr_db": min(finite) if finite else None,
                    "median_sqnr_db": float(np.median(finite)) if finite else None, "worst_op": worst["op"]})
    return sorted(out, key=lambda b: b["worst_sqnr_db"] if b["worst_sqnr_db"] is not None else float("inf"))


def per_layer(artifact, *, images=None, checkpoint=None, variant=None, limit: int = PER_LAYER_IMAGES) -> PerLayerReport:
    """Per-tensor int8 error of ``artifact`` on held-out real images (``images``, minus
    those that calibrated it; the held-out digits for a digits model)."""
    from evit_export.models.reference import reference_model

    path, target, spec = _artifact_and_spec(artifact, checkpoint, variant)
    deployed = reference_model(spec, checkpoint, variant, near=(Path(path).parent,))
    spec = spec or deployed.spec
    if target.precision_family(spec) != "int8":
        raise UserError(f"{Path(path).name} is {spec.precision}, not int8: --per-layer explains int8 error only")
    pixels, described = comparison_inputs(spec, "int8", images=images, calibration=calibration_of(path))
    pixels = pixels[:limit]
    rows = target.int8_layer_errors(Path(path), spec, pixels, deployed)
    if not rows:
        raise UserError(f"{Path(path).name}: no quantized tensor could be matched to the float model")
    rows.sort(key=_sort_key)
    return PerLayerReport(str(path), spec.precision, f"{len(pixels)} of {described}", rows, summarise_blocks(rows))
