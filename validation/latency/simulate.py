"""Simulated latency for devices this machine cannot reach: always an estimate.

Model: the deploy graph is captured with ``torch.export`` (static shapes), and each
op costs ``max(MACs / compute rate, bytes moved / bandwidth) + dispatch overhead``
on a device profile (a roofline per op). Compute rates differ by op class, because
depthwise convs and small matmuls reach a fraction of a device's GEMM peak.

The profiles are assumptions written down as data, not measurements of the devices.
The ``host-cpu-1t`` profile describes this machine (single-thread fp32 GEMM peak
≈ 95 GFLOP/s measured here), so ``validate`` can compare the method against a
measured onnxruntime run; that comparison is the only evidence of its accuracy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    dense_gmacs: float  # dense conv / GEMM, giga-MACs per second at this precision
    depthwise_gmacs: float
    matmul_gmacs: float  # attention matmuls (small, batched)
    bandwidth_gbs: float  # effective memory bandwidth for element-wise / layout ops
    overhead_us: float  # per-op dispatch cost
    bytes_per_element: int = 4
    source: str = "assumption"


PROFILES = {p.name: p for p in (
    DeviceProfile("host-cpu-1t", "this machine (AVX2 EPYC), 1 thread, fp32 (onnxruntime-like)", 34.0, 7.5, 15.0,
                  15.0, 1.3, 4, "rates fitted to onnxruntime batch-1 timings of M0-M5 measured here "
                  "(benchmarks/bench_simulate.py)"),
    DeviceProfile("a13-cpu-fp32", "iPhone 11 (A13) CPU, 2 performance cores, fp32", 45.0, 8.0, 14.0, 20.0, 4.0,
                  4, "assumption: 2 cores x 2.65 GHz x 2 NEON FMA pipes x 4 lanes at ~55% efficiency"),
    DeviceProfile("a13-gpu-fp16", "iPhone 11 (A13) GPU via CoreML, fp16", 250.0, 40.0, 60.0, 40.0, 25.0,
                  2, "assumption: ~0.7 TFLOPS fp16 at ~70% for dense conv; kernel launch overhead ~25 us"),
    DeviceProfile("a13-ane-fp16", "iPhone 11 (A13) Neural Engine via CoreML, fp16", 1200.0, 150.0, 120.0, 30.0, 8.0,
                  2, "assumption: 5.5 TOPS marketing peak at ~40% for dense conv; layout ops bandwidth-bound"),
    DeviceProfile("android-midrange-cpu-4t", "mid-range Android (Cortex-A76 class), LiteRT XNNPACK, 4 threads, fp32",
                  60.0, 10.0, 16.0, 15.0, 3.0, 4,
                  "assumption: 4 x 2.4 GHz x 2 NEON FMA pipes x 4 lanes at ~40% efficiency"),
)}


@dataclass
class OpCost:
    op: str
    kind: str
    macs: int
    bytes: int
    ms: float


@dataclass
class Estimate:
    device: str
    description: str
    batch: int
    estimate_ms: float
    compute_bound_ms: float
    memory_bound_ms: float
    overhead_ms: float
    ops: int
    kind: str = "estimate"
    assumptions: str = ""
    by_kind: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


_LAYOUT = {"view", "reshape", "permute", "transpose", "split_with_sizes", "split", "cat", "pad",
           "constant_pad_nd", "slice", "getitem", "flatten", "contiguous", "clone", "unsafe_view", "expand"}
_ELEMENTWISE = {"add", "mul", "sub", "relu", "sigmoid", "softmax", "_softmax", "mean", "adaptive_avg_pool2d",
                "div"}


def _numel_bytes(val, bpe: int) -> int:
    if isinstance(val, torch.Tensor):
        return val.numel() * bpe
    if isinstance(val, (list, tuple)):
        return sum(_numel_bytes(v, bpe) for v in val)
    return 0


def graph_ops(model, img_size: int, batch: int = 1) -> list[tuple[str, str, int, int]]:
    """(op name, kind, MACs, elements moved) for each op of the exported deploy graph."""
    x = torch.zeros(batch, 3, img_size, img_size)
    exported = torch.export.export(model.eval(), (x,))
    ops = []
    for node in exported.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        out = node.meta.get("val")
        ins = [a.meta.get("val") for a in node.args if isinstance(a, torch.fx.Node)]
        moved = _numel_bytes(out, 1) + sum(_numel_bytes(v, 1) for v in ins)
        macs, kind = 0, "layout" if name in _LAYOUT else "elementwise" if name in _ELEMENTWISE else "other"
        if name in ("conv2d", "convolution"):
            weight = ins[1]
            groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
            macs = out.numel() * weight.shape[1] * weight.shape[2] * weight.shape[3]
            kind = "depthwise" if groups > 1 and weight.shape[1] == 1 else "dense"
            moved = _numel_bytes(out, 1) + _numel_bytes(ins[0], 1) + weight.numel()
        elif name in ("linear", "addmm"):
            w = ins[1]
            macs = out.numel() * (w.shape[1] if name == "linear" else w.shape[0])
            kind = "dense"
        elif name in ("matmul", "bmm"):
            macs = out.numel() * ins[0].shape[-1]
            kind = "matmul"
        elif name == "getitem":
            continue  # a view of a multi-output op, free
        ops.append((name, kind, int(macs), int(moved)))
    return ops


def estimate_latency(model, img_size: int, device: str, batch: int = 1) -> Estimate:
    profile = PROFILES[device]
    rates = {"dense": profile.dense_gmacs, "depthwise": profile.depthwise_gmacs, "matmul": profile.matmul_gmacs}
    compute = memory = overhead = 0.0
    by_kind: dict[str, float] = {}
    ops = graph_ops(model, img_size, batch)
    for name, kind, macs, moved in ops:
        t_compute = macs / (rates[kind] * 1e9) if kind in rates else 0.0
        t_memory = moved * profile.bytes_per_element / (profile.bandwidth_gbs * 1e9)
        # Reshapes and views cost nothing but their dispatch on most runtimes.
        if name in ("view", "reshape", "flatten", "unsafe_view"):
            t_memory = 0.0
        t = max(t_compute, t_memory)
        compute += t if t_compute >= t_memory else 0.0
        memory += t if t_compute < t_memory else 0.0
        overhead += profile.overhead_us * 1e-6
        by_kind[kind] = by_kind.get(kind, 0.0) + (t + profile.overhead_us * 1e-6) * 1e3
    total = (compute + memory + overhead) * 1e3
    return Estimate(device=device, description=profile.description, batch=batch, estimate_ms=round(total, 3),
                    compute_bound_ms=round(compute * 1e3, 3), memory_bound_ms=round(memory * 1e3, 3),
                    overhead_ms=round(overhead * 1e3, 3), ops=len(ops), assumptions=profile.source,
                    by_kind={k: round(v, 3) for k, v in by_kind.items()})
