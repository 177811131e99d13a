"""LiteRT (XNNPACK) vs onnxruntime, same weights, same run: 1 thread, batch 1.

    .venv/bin/python benchmarks/bench_tflite.py [--variants m0 m5] [--iters 300] [--json out.json]
        [--litert-torch m0=PATH.tflite ...]

For each variant: seeded realistic weights, the project's ONNX exports (fp32 and
static int8) and TFLite exports (fp32, full-integer int8, int8 with float attention),
then all runtimes timed in one process with interleaved iterations (every round runs
each model once, so machine load affects them alike). Prints median and min latency, the fp32
LiteRT/onnxruntime ratio (the in-environment proxy for "as fast as litert-torch's
conversion": litert-torch's measured ratios are 2.16/2.60 = 0.83 for M0 and
12.3/12.7 = 0.97 for M5) and the int8 speedup over fp32, for LiteRT and, as a
same-machine reference for what int8 can gain on this CPU, for onnxruntime.

The fp32 goal itself is "at least as fast as litert-torch's conversion". ``make
bench-anchor`` (= ``--anchor-python .venv-anchor/bin/python``) converts the same seeded
weights with litert-torch in its own environment (it pulls jax and transformers),
checks that the anchor computes the same logits as the project's ONNX export, and times
it in the same interleaved run: that is the direct comparison, and it also shows
whether the anchor ratios above (measured on an AVX-512 machine) hold on this CPU.
``--litert-torch m0=FILE`` times an existing litert-torch .tflite of the same weights.
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

ANCHOR_RATIO = {"m0": 2.16 / 2.60, "m5": 12.3 / 12.7}


def _ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape]).astype(np.float32)
    feed = {inp.name: x}
    return lambda: sess.run(None, feed)


def _litert(path: Path):
    from evit_export.core.import_order import tf_safe

    tf_safe()
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    rng = np.random.default_rng(0)
    if np.dtype(d["dtype"]).kind in "iu":
        info = np.iinfo(d["dtype"])
        x = rng.integers(info.min, info.max + 1, size=d["shape"]).astype(d["dtype"])
    else:
        x = rng.standard_normal(d["shape"]).astype(d["dtype"])
    it.set_tensor(d["index"], x)
    return it.invoke


def _litert_logits(path: Path, x_nchw: np.ndarray) -> np.ndarray:
    """Logits of a float .tflite for a normalized NCHW batch (NHWC inputs get a transpose)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    d, o = it.get_input_details()[0], it.get_output_details()[0]
    nchw = int(d["shape"][1]) == x_nchw.shape[1]
    it.set_tensor(d["index"], np.ascontiguousarray(x_nchw if nchw else x_nchw.transpose(0, 2, 3, 1)))
    it.invoke()
    return it.get_tensor(o["index"]).copy()


def convert_with_litert_torch(python: str, variant: str, out: Path) -> dict:
    """Run the anchor converter in its own environment (same seeded weights)."""
    script = Path(__file__).resolve().parent / "anchor" / "litert_torch_convert.py"
    proc = subprocess.run([python, str(script), "--variant", variant, "--seed", "0", str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"litert-torch conversion of {variant} failed: {' | '.join(tail)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_interleaved(fns: dict, iters: int, warmup: int = 15) -> dict:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: {"median_ms": float(np.median(v) * 1e3), "min_ms": float(np.min(v) * 1e3),
                "p90_ms": float(np.percentile(v, 90) * 1e3)} for k, v in times.items()}


def _accuracy(deployed, target, fp32_path: Path, int8_path: Path) -> dict:
    """fp32: max abs vs PyTorch on seeded pixels; int8: top-1 agreement on held-out digits."""
    from evit_export.core.preprocess import seeded_pixels
    from evit_export.data import heldout_images
    from evit_export.targets import RunnerOptions
    from evit_export.targets.torch_runner import TorchRunner
    from evit_export.validation.equivalence import compare_outputs

    out = {}
    for name, path in (("fp32", fp32_path), ("int8", int8_path)):
        spec = target.read_spec(path)
        pixels = seeded_pixels(16, spec.img_size, 0) if name == "fp32" else heldout_images(spec, 200)[0]
        with target.open(path, options=RunnerOptions(threads=1)) as runner:
            got = runner.run(pixels)
        ref = TorchRunner(deployed, spec).run(pixels)
        rep = compare_outputs(ref, got, target.precision_family(spec))
        top2 = np.sort(ref, axis=1)[:, -2:]
        out[name] = {"ref_top1_margin_median": float(np.median(top2[:, 1] - top2[:, 0])),"max_abs": rep.max_abs, "ref_max_abs": rep.ref_max_abs, "cosine_min": rep.cosine_min,
                     "top1_agreement": rep.top1_agreement, "passed": rep.passed, "n": rep.n}
    return out


def bench_variant(variant: str, work: Path, iters: int, calibration_size: int, litert_torch: str | None,
                  anchor_python: str | None = None) -> dict:
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets import get_target
    from evit_export.targets.onnx import OnnxOptions
    from evit_export.targets.onnx.exporter import export_onnx
    from evit_export.targets.tflite import TFLiteOptions

    deployed, spec = deploy_for_export(variant, seed=0)
    onnx_path = work / f"{variant}.onnx"
    export_onnx(deployed, spec, onnx_path)
    onnx_int8_path = work / f"{variant}_int8.onnx"
    export_onnx(deployed, spec, onnx_int8_path, OnnxOptions(precision="int8", calibration_size=calibration_size))
    tfl = get_target("tflite")
    t0 = time.perf_counter()
    fp32 = tfl.export(deployed, spec, work / f"{variant}.tflite")
    export_s = time.perf_counter() - t0
    int8 = tfl.export(deployed, spec, work / f"{variant}_int8.tflite",
                      TFLiteOptions(quantize="int8", calibration_size=calibration_size))
    int8_fa = tfl.export(deployed, spec, work / f"{variant}_int8_fa.tflite",
                         TFLiteOptions(quantize="int8", calibration_size=calibration_size, float_attention=True))
    anchor = None
    if anchor_python and not litert_torch:
        litert_torch = work / f"{variant}_litert_torch.tflite"
        anchor = convert_with_litert_torch(anchor_python, variant, litert_torch)
    fns = {"onnxruntime": _ort_session(onnx_path), "onnxruntime_int8": _ort_session(onnx_int8_path),
           "litert_fp32": _litert(fp32.path), "litert_int8": _litert(int8.path),
           "litert_int8_float_attn": _litert(int8_fa.path)}
    if litert_torch:
        fns["litert_torch_fp32"] = _litert(Path(litert_torch))
        # The anchor must compute the same function, or its timing means nothing.
        import onnxruntime as ort

        x = np.random.default_rng(1).standard_normal((1, 3, spec.img_size, spec.img_size)).astype(np.float32)
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        anchor = dict(anchor or {},
                      max_abs_vs_onnx=float(np.abs(_litert_logits(Path(litert_torch), x) - ref).max()),
                      ours_max_abs_vs_onnx=float(np.abs(_litert_logits(fp32.path, x) - ref).max()))
    res = time_interleaved(fns, iters)
    ort_med, ort_min = res["onnxruntime"]["median_ms"], res["onnxruntime"]["min_ms"]
    acc = _accuracy(deployed, tfl, fp32.path, int8.path)
    out = {"variant": variant, "latency": res, "tflite_export_seconds": round(export_s, 1), "accuracy": acc,
           "ratio_fp32_vs_ort_median": res["litert_fp32"]["median_ms"] / ort_med,
           "ratio_fp32_vs_ort_min": res["litert_fp32"]["min_ms"] / ort_min,
           "int8_speedup_median": res["litert_fp32"]["median_ms"] / res["litert_int8"]["median_ms"],
           "int8_speedup_min": res["litert_fp32"]["min_ms"] / res["litert_int8"]["min_ms"],
           "onnxruntime_int8_speedup_median": ort_med / res["onnxruntime_int8"]["median_ms"],
           "int8_float_attention_speedup_median": res["litert_fp32"]["median_ms"]
           / res["litert_int8_float_attn"]["median_ms"],
           "goal_ratio": ANCHOR_RATIO.get(variant)}
    if "litert_torch_fp32" in res:
        lt = res["litert_torch_fp32"]
        out["litert_torch"] = dict(anchor or {}, ratio_vs_ort_median=lt["median_ms"] / ort_med,
                                   ratio_vs_ort_min=lt["min_ms"] / ort_min,
                                   ours_vs_litert_torch_median=res["litert_fp32"]["median_ms"] / lt["median_ms"],
                                   ours_vs_litert_torch_min=res["litert_fp32"]["min_ms"] / lt["min_ms"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["m0", "m5"])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--calibration-size", type=int, default=100)
    ap.add_argument("--litert-torch", nargs="*", default=[], help="variant=FILE.tflite from litert-torch")
    ap.add_argument("--anchor-python", default=None,
                    help="python of the litert-torch environment (make anchor-env: .venv-anchor/bin/python)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    anchors = dict(a.split("=", 1) for a in args.litert_torch)
    try:
        from evit_export.core.machine import machine_description

        machine = machine_description()
    except ImportError:
        import platform

        machine = platform.processor()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-tflite-") as d:
        for variant in args.variants:
            r = bench_variant(variant, Path(d), args.iters, args.calibration_size, anchors.get(variant),
                              args.anchor_python)
            results.append(r)
            lat = r["latency"]
            print(f"\n{variant.upper()}  (1 thread, batch 1, {args.iters} interleaved rounds; {machine})")
            for k, v in lat.items():
                print(f"  {k:18s} median {v['median_ms']:7.3f} ms   min {v['min_ms']:7.3f} ms   p90 {v['p90_ms']:7.3f} ms")
            goal = r["goal_ratio"]
            print(f"  fp32 LiteRT / onnxruntime: median {r['ratio_fp32_vs_ort_median']:.3f}, min "
                  f"{r['ratio_fp32_vs_ort_min']:.3f}" + (f"  (goal <= {goal:.2f})" if goal else ""))
            lt = r.get("litert_torch")
            if lt:
                print(f"  litert-torch / onnxruntime: median {lt['ratio_vs_ort_median']:.3f}, min "
                      f"{lt['ratio_vs_ort_min']:.3f}  (same logits as the ONNX export: max abs "
                      f"{lt['max_abs_vs_onnx']:.1e}; ours {lt['ours_max_abs_vs_onnx']:.1e})")
                print(f"  ours / litert-torch:        median {lt['ours_vs_litert_torch_median']:.3f}, min "
                      f"{lt['ours_vs_litert_torch_min']:.3f}  (goal <= 1.00)")
            print(f"  int8 speedup over fp32:    median {r['int8_speedup_median']:.2f}x, min "
                  f"{r['int8_speedup_min']:.2f}x  (goal >= 1.5x; onnxruntime int8 over its fp32, same "
                  f"run: {r['onnxruntime_int8_speedup_median']:.2f}x)")
            print(f"  int8 --float-attention over fp32: median {r['int8_float_attention_speedup_median']:.2f}x")
            print(f"  fp32 .tflite export: {r['tflite_export_seconds']:.1f} s")
            a = r["accuracy"]
            print(f"  fp32 vs PyTorch: max abs {a['fp32']['max_abs']:.2e} (|ref| {a['fp32']['ref_max_abs']:.2f}); "
                  f"int8 top-1 agreement on {a['int8']['n']} held-out digits: "
                  f"{100 * a['int8']['top1_agreement']:.1f}% (cosine min {a['int8']['cosine_min']:.4f}; "
                  f"PyTorch's top-1/top-2 margin, median: {a['int8']['ref_top1_margin_median']:.3g})")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
