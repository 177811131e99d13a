"""Simulated latency of any torch model on a device profile: always an estimate.

One forward pass is recorded op by op (``models.profile.op_records``, which also counts
the MACs) and each op is put in a class whose cost scales with one quantity:

    conv / pointwise / depthwise / grouped / matmul   multiply-accumulates
    elementwise / layout                              tensor elements read + written
    exp / erf                                         output elements of transcendental ops
    gemm_traffic                                      operand elements of conv / GEMM ops
    dispatch                                          ops that a runtime executes

Linear layers and attention matmuls share one class: both run as GEMM kernels in
XNNPACK and onnxruntime, and a separate attention price would rest on the handful of
transformer rows a calibration set has (it fitted worse when tried on the phone data).

Batch norm after a convolution or linear layer, and ReLU-like clamps directly after
one, are free: every exporter folds or fuses them. Views (reshape, expand, slice,
transpose of strides) are free too; copies that realise them (clone, cat, pad, roll)
are layout work. A device profile (profiles.py) prices each class; how it combines the
class times depends on the device class (see ``estimate``).

Two refinements for what CNN-only op counts miss (both are extra terms: a profile
without their prices prices a graph as before):
- transcendental ops pay compute per output element on top of their memory traffic,
  which an add or a ReLU does not: ``exp`` for the exp-based ones (sigmoid, SiLU,
  softmax, tanh), ``erf`` for GELU. They are two classes because runtimes run them
  through different kernels (XNNPACK has vectorised sigmoid/softmax; erf-GELU fell
  back to TFLite's scalar builtin in the runtimes the phone data measured), so their
  cost per element differs from phone to phone, not by one fixed multiple of an add;
- a GEMM or convolution also streams its operands (activations in, weights, result
  out): ``gemm_traffic`` counts them, so a small GEMM (few MACs per element moved,
  as in narrow attention heads) costs more per MAC than a large one, roofline-style.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from evit_export.models.profile import OpRecord, op_records

MAC_CLASSES = ("conv", "pointwise", "depthwise", "grouped", "matmul")
ELEMENT_CLASSES = ("elementwise", "layout")
TRANSCENDENTAL_CLASSES = ("exp", "erf")
# The feature names a profile's coefficients are keyed by, with their units.
FEATURES = {"conv": "GMAC", "pointwise": "GMAC", "depthwise": "GMAC", "grouped": "GMAC", "matmul": "GMAC",
            "elementwise": "M elements", "layout": "M elements", "exp": "M output elements",
            "erf": "M output elements", "gemm_traffic": "M elements", "dispatch": "ops", "constant": "1"}

_FREE = {"view", "_unsafe_view", "reshape", "expand", "t", "transpose", "permute", "unsqueeze", "squeeze",
         "alias", "detach", "empty", "slice", "select", "split", "split_with_sizes", "unbind", "as_strided",
         "lift_fresh", "dropout", "zeros", "ones", "full", "arange", "_to_copy", "lift_fresh_copy",
         "expand_as", "unflatten", "flatten", "contiguous", "numpy_T", "chunk"}
_LAYOUT = {"clone", "cat", "stack", "constant_pad_nd", "pad", "roll", "index", "gather", "copy_", "copy",
           "pixel_shuffle", "index_select", "repeat", "flip", "narrow_copy", "new_zeros", "fill_"}
_MATMUL = {"addmm", "mm", "linear", "bmm", "baddbmm", "matmul", "_scaled_dot_product_flash_attention_for_cpu",
           "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention"}
_POOLS = {"avg_pool2d", "max_pool2d", "max_pool2d_with_indices"}
_FOLDED_INTO_PRODUCER = {"native_batch_norm", "_native_batch_norm_legit_no_training", "batch_norm"}
_FUSED_ACTIVATIONS = {"relu", "relu_", "hardtanh", "hardtanh_", "clamp", "clamp_", "clamp_min", "clamp_min_"}
_LINEAR_PRODUCERS = {"convolution", "addmm", "mm"}
# Elementwise ops whose per-element work is a transcendental function, by the function.
_TRANSCENDENTAL = {"sigmoid": "exp", "sigmoid_": "exp", "silu": "exp", "silu_": "exp", "_softmax": "exp",
                   "softmax": "exp", "_log_softmax": "exp", "tanh": "exp", "tanh_": "exp", "exp": "exp",
                   "gelu": "erf", "gelu_": "erf", "erf": "erf"}
# GEMM-like classes whose operands stream through memory (depthwise and grouped convs are
# priced per MAC at their own, memory-bound rates already).
_GEMM_TRAFFIC_CLASSES = ("conv", "pointwise", "matmul")


def classify(record: OpRecord, effective_producer: str) -> str | None:
    """The op class of one recorded op, or None when an exporter removes it."""
    op = record.op
    if op == "convolution":
        if record.groups > 1 and record.groups == record.in_channels:
            return "depthwise"
        if record.groups > 1:
            # Grouped convs (RegNet, ResNeXt) have no fast kernel in most mobile runtimes;
            # converters often split them into one conv per group.
            return "grouped"
        return "pointwise" if record.kernel == 1 and record.groups == 1 else "conv"
    if op in _POOLS:
        return "depthwise"  # a pooling window is a depthwise kernel without weights
    if op in _MATMUL:
        return "matmul"
    if op in _FREE:
        return None
    if op in _FOLDED_INTO_PRODUCER and effective_producer in _LINEAR_PRODUCERS:
        return None
    if op in _FUSED_ACTIVATIONS and effective_producer in _LINEAR_PRODUCERS:
        return None
    return "layout" if op in _LAYOUT else "elementwise"


@dataclass
class GraphFeatures:
    """What a forward pass costs, per op class: the simulator's only view of a model."""
    macs: dict = field(default_factory=dict)      # class -> MACs
    elements: dict = field(default_factory=dict)  # class -> elements read + written
    ops: int = 0                                  # ops a runtime dispatches
    total_macs: int = 0
    transcendental: dict = field(default_factory=dict)  # exp / erf -> output elements
    gemm_operands: int = 0                        # elements read + written by conv / GEMM ops

    def vector(self) -> dict[str, float]:
        """Feature values in the units of FEATURES (what a profile's coefficients multiply)."""
        out = {c: self.macs.get(c, 0) / 1e9 for c in MAC_CLASSES}
        out.update({c: self.elements.get(c, 0) / 1e6 for c in ELEMENT_CLASSES})
        out.update({c: self.transcendental.get(c, 0) / 1e6 for c in TRANSCENDENTAL_CLASSES})
        out.update(gemm_traffic=self.gemm_operands / 1e6, dispatch=float(self.ops), constant=1.0)
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GraphFeatures":
        return cls(**data)


def features_of(records: list[OpRecord]) -> GraphFeatures:
    feats = GraphFeatures(macs={c: 0 for c in MAC_CLASSES}, elements={c: 0 for c in ELEMENT_CLASSES},
                          transcendental={c: 0 for c in TRANSCENDENTAL_CLASSES})
    # effective[i]: the op record i's output really comes from once removed ops are skipped
    # (conv -> BN -> ReLU: the ReLU still follows the conv and fuses into it).
    effective: list[str] = []
    for r in records:
        producer = effective[r.producer] if 0 <= r.producer < len(effective) else ""
        kind = classify(r, producer)
        feats.total_macs += r.macs
        removed = kind is None and (r.op in _FOLDED_INTO_PRODUCER or r.op in _FUSED_ACTIVATIONS)
        effective.append(producer if removed else r.op)
        if kind is None:
            continue
        feats.ops += 1
        if kind in MAC_CLASSES:
            feats.macs[kind] += r.macs or r.out_elements * r.kernel  # pools: one MAC per window tap
            if kind in _GEMM_TRAFFIC_CLASSES:
                feats.gemm_operands += r.in_elements + r.out_elements
        else:
            feats.elements[kind] += r.in_elements + r.out_elements
            if r.op in _TRANSCENDENTAL:
                feats.transcendental[_TRANSCENDENTAL[r.op]] += r.out_elements
    return feats


def model_features(model: torch.nn.Module, img_size: int, batch: int = 1) -> GraphFeatures:
    return features_of(op_records(model, img_size, batch))


@dataclass
class Estimate:
    model: str
    device: str
    img_size: int
    batch: int
    estimate_ms: float
    breakdown_ms: dict   # op class -> ms (plus dispatch and constant for CPU interpreters)
    device_class: str
    provenance: str      # what the profile rests on
    validation: dict     # the profile's validation error figures
    kind: str = "estimate"
    # digits the figures deserve (latency.significant_figures); None: unrounded, as priced
    significant_figures: int | None = None
    # planned from the graph at the profile's precision (workloads.planned_memory):
    # activation_bytes, packed_activation_bytes, peak_live_bytes, weight_bytes, precision
    memory: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def estimate(features: GraphFeatures, profile, model: str = "", img_size: int = 0, batch: int = 1) -> Estimate:
    """Price ``features`` on ``profile`` (a profiles.DeviceProfile).

    cpu-interpreter: op-by-op runtimes (TFLite/XNNPACK, onnxruntime CPU) run one kernel
    after another, so class times add up and every op pays a dispatch cost.
    graph-accelerator: whole-graph compilers (ANE, GPU delegates, NPUs) fuse the graph
    and overlap data movement with compute, so there is no per-op cost: the graph costs
    a launch plus the larger of its compute time and its memory time.
    """
    values, coef = features.vector(), profile.coefficients
    parts = {name: values[name] * coef.get(name, 0.0) for name in FEATURES}
    if profile.device_class == "graph-accelerator":
        compute = sum(parts[c] for c in MAC_CLASSES + TRANSCENDENTAL_CLASSES)
        memory = sum(parts[c] for c in ELEMENT_CLASSES + ("gemm_traffic",))
        total = parts["constant"] + max(compute, memory)
    else:
        total = sum(parts.values())
    return Estimate(model=model, device=profile.name, img_size=img_size, batch=batch,
                    estimate_ms=round(total, 4), breakdown_ms={k: round(v, 4) for k, v in parts.items() if v},
                    device_class=profile.device_class, provenance=profile.provenance(),
                    validation=profile.validation)
