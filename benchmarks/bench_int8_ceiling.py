"""How much faster can full-integer int8 be than fp32 on this CPU, at best?

    .venv/bin/python benchmarks/bench_int8_ceiling.py [--iters 200]

The TFLite goal asks int8 to be >= 1.5x faster than fp32 (XNNPACK, 1 thread). Whether
that is reachable depends on the CPU's integer dot-product instructions (AVX-512 VNNI /
AVX-VNNI on x86, SDOT on Arm), not on the graph. This script measures the ceiling on
blocks that are nothing but the compute-bound part of EfficientViT, at the stage
shapes of M0 and M5: four residual FFNs (1x1 conv C->2C, ReLU, 1x1 conv 2C->C, add)
each followed by a 3x3 depthwise conv. Both precisions run as one XNNPACK partition
(checked and printed), so there is no fallback op, layout change or partition switch
to blame. The per-shape speed-ups, weighted by each stage's share of the model's MACs,
estimate what a whole M0 / M5 can gain from int8 in XNNPACK on this CPU.

TensorFlow (to build and convert the blocks) and LiteRT (to time them) must not share
a process, so the building happens in a child process (``--build DIR``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# (label, spatial size, channels): EfficientViT stage shapes at 224x224.
SHAPES = [("M0 stage 1", 14, 64), ("M0 stage 2", 7, 128), ("M0 stage 3", 4, 192),
          ("M5 stage 1", 14, 192), ("M5 stage 2", 7, 288), ("M5 stage 3", 4, 384),
          ("patch-embed-like", 56, 64)]
REPEATS = 4


def _blocks(tf, size, c, w1, b1, w2, b2, dw):
    @tf.function(input_signature=[tf.TensorSpec([1, size, size, c], tf.float32)])
    def blocks(x):
        for _ in range(REPEATS):
            h = tf.nn.relu(tf.nn.conv2d(x, w1, 1, "VALID") + b1)
            x = x + tf.nn.conv2d(h, w2, 1, "VALID") + b2
            x = tf.nn.depthwise_conv2d(x, dw, [1, 1, 1, 1], "SAME")
        return x

    return blocks.get_concrete_function()


def build(out_dir: Path) -> None:
    """Child process: write fp32 and int8 .tflite files for every shape (TensorFlow only)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for i, (_, size, c) in enumerate(SHAPES):
        w1 = (rng.standard_normal((1, 1, c, 2 * c)) / np.sqrt(c)).astype(np.float32)
        w2 = (rng.standard_normal((1, 1, 2 * c, c)) / np.sqrt(2 * c)).astype(np.float32)
        dw = (rng.standard_normal((3, 3, c, 1)) / 3.0).astype(np.float32)
        b1, b2 = (rng.standard_normal(2 * c) * 0.1).astype(np.float32), (rng.standard_normal(c) * 0.1).astype(np.float32)

        fn = _blocks(tf, size, c, w1, b1, w2, b2, dw)
        (out_dir / f"{i}_fp32.tflite").write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn]).convert())
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        calib = [rng.standard_normal((1, size, size, c)).astype(np.float32) for _ in range(16)]
        conv.representative_dataset = lambda calib=calib: ([x] for x in calib)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        (out_dir / f"{i}_int8.tflite").write_bytes(conv.convert())


def mac_shares(variant: str) -> dict[str, float]:
    """Share of the model's MACs in the patch embedding and in each stage (at 224x224)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from evit_export.models.efficientvit import EfficientViT

    model = EfficientViT(variant).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 224, 224))
    counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    parts = {"patch embedding": counts["EfficientViT.patch_embed"]}
    parts.update({f"stage {i + 1}": counts[f"EfficientViT.stages.{i}"] for i in range(3)})
    total = sum(parts.values())
    return {k: v / total for k, v in parts.items()}


def model_bound(variant: str, speedups: dict[str, float]) -> tuple[float, dict[str, float]]:
    """Whole-model int8 speed-up if every part ran at its block's measured speed-up,
    weighting parts by MACs (Amdahl over the stages)."""
    shares = mac_shares(variant)
    block = {"patch embedding": "patch-embed-like"}
    block.update({f"stage {i}": f"{variant.upper()} stage {i}" for i in (1, 2, 3)})
    return 1.0 / sum(share / speedups[block[part]] for part, share in shares.items()), shares


def _open(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    from evit_export.targets.tflite.runner import delegate_partitions

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.ones(d["shape"], d["dtype"]))
    partitions = delegate_partitions(it)
    return it.invoke, partitions


def cpu_isa() -> str:
    try:
        flags = set(next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        return "unknown"
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"]
    return " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in wanted)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--build", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.build:
        build(args.build)
        return 0
    with tempfile.TemporaryDirectory(prefix="int8-ceiling-") as d:
        subprocess.run([sys.executable, __file__, "--build", d], check=True, capture_output=True)
        print(f"CPU: {cpu_isa()}")
        print(f"{REPEATS} x (FFN C->2C->C + residual, 3x3 depthwise), XNNPACK, 1 thread, "
              f"{args.iters} interleaved rounds, median ms")
        print(f"{'shape':18s} {'HxWxC':>10s} {'fp32':>8s} {'int8':>8s} {'speedup':>8s} {'partitions':>11s}")
        rows = []
        for i, (label, size, c) in enumerate(SHAPES):
            fp32, p32 = _open(Path(d) / f"{i}_fp32.tflite")
            int8, p8 = _open(Path(d) / f"{i}_int8.tflite")
            for _ in range(10):
                fp32(), int8()
            t32, t8 = [], []
            for _ in range(args.iters):
                for fn, acc in ((fp32, t32), (int8, t8)):
                    t = time.perf_counter()
                    fn()
                    acc.append(time.perf_counter() - t)
            m32, m8 = float(np.median(t32) * 1e3), float(np.median(t8) * 1e3)
            rows.append({"shape": label, "size": size, "channels": c, "fp32_ms": m32, "int8_ms": m8,
                         "speedup": m32 / m8, "partitions": [p32, p8]})
            print(f"{label:18s} {f'{size}x{size}x{c}':>10s} {m32:8.3f} {m8:8.3f} {m32 / m8:7.2f}x {f'{p32} / {p8}':>11s}")
        best = max(r["speedup"] for r in rows)
        print(f"best int8 speed-up on fully delegated compute-bound blocks: {best:.2f}x (goal for the model: 1.5x)")
        bounds = {v: model_bound(v, {r["shape"]: r["speedup"] for r in rows}) for v in ("m0", "m5")}
        for v, (bound, shares) in bounds.items():
            parts = ", ".join(f"{k} {100 * x:.0f}%" for k, x in shares.items())
            print(f"{v.upper()}: MAC-weighted estimate for the whole model {bound:.2f}x  (MAC shares: {parts})")
        print("(the estimate assumes each part's fp32 time is proportional to its MACs and that every part "
              "gets its block's speed-up)")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_isa(), "rows": rows,
                                         "model_bounds": {v: b for v, (b, _) in bounds.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
