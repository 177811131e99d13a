"""ExecuTorch: ours vs the documentation's recipe on timm's model, and one table of
onnxruntime / LiteRT / ExecuTorch, fp32 and int8, on the same weights.

    .venv/bin/python benchmarks/bench_executorch.py [--variants m0 m5] [--iters 200] [--json out.json]

For each variant: timm's EfficientViT with realistic random weights (random BatchNorm
statistics and gammas, seed 0) and the project's folded deploy graph loaded from the
same state dict.

(1) ExecuTorch, fp32: the documentation's recipe applied to timm's model
    (``torch.export.export`` -> ``to_edge_transform_and_lower(partitioner=
    [XnnpackPartitioner()])`` -> ``to_executorch()``) against ``evit-export executorch``
    on the deploy graph; both run by ``executorch.runtime`` in this process, interleaved,
    1 thread. The ratio ours/recipe should be <= 1.0 (3 % is run-to-run noise). The
    XNNPACK partition count and the kernels left outside the delegate say why.
(2) The same weights exported by evit-export to ONNX, TFLite and ExecuTorch, fp32 and
    static int8 (calibrated on random pixels: this is a speed table, not an accuracy
    one), all timed interleaved in one process, 1 thread, batch 1, with the CPU flags.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def time_interleaved(fns: dict, iters: int, warmup: int = 10) -> dict:
    """Every round runs each model once, so machine load affects them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: {"median_ms": float(np.median(v) * 1e3), "min_ms": float(np.min(v) * 1e3)} for k, v in times.items()}


def documented_recipe(model, img_size: int, out: Path) -> float:
    """ExecuTorch's documented XNNPACK export of an eager model; returns seconds taken."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    started = time.perf_counter()
    ep = torch.export.export(model.eval(), (torch.randn(1, 3, img_size, img_size),))
    program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    out.write_bytes(program.buffer)
    return time.perf_counter() - started


def executorch_call(path: Path, x: np.ndarray):
    """(timed call, logits function) of a .pte on executorch.runtime, 1 thread."""
    import torch
    from evit_export.targets.executorch.runner import runtime, runtime_logs_filtered, set_threads

    rt = runtime()
    with runtime_logs_filtered():
        set_threads(1)
        method = rt.load_program(path).load_method("forward")
    raw = method._method
    raw.set_inputs((torch.from_numpy(x),))
    return raw.execute, lambda: method.execute((torch.from_numpy(x),))[0].numpy()


def onnx_call(path: Path, x: np.ndarray):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)


def litert_call(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.random.default_rng(0).standard_normal(d["shape"]).astype(d["dtype"]))
    return it.invoke


def bench_variant(variant: str, work: Path, iters: int, calibration_size: int, img_size: int) -> dict:
    import torch
    from conftest import make_timm_model
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets import get_target
    from evit_export.targets.executorch import ExecuTorchOptions
    from evit_export.targets.onnx import OnnxOptions
    from evit_export.targets.tflite import TFLiteOptions

    tfl = get_target("tflite")  # the import-order guard first: torch's triton before TensorFlow
    ref = make_timm_model(variant, img_size=img_size, seed=0)
    torch.save(ref.state_dict(), work / f"{variant}.pth")
    deployed, spec = deploy_for_export(variant, work / f"{variant}.pth", img_size=img_size)
    et, onnx = get_target("executorch"), get_target("onnx")
    recipe_path = work / f"{variant}_recipe.pte"
    recipe_s = documented_recipe(ref, img_size, recipe_path)
    started = time.perf_counter()
    ours = et.export(deployed, spec, work / f"{variant}.pte")
    ours_s = time.perf_counter() - started
    cal = {"calibration_data": "random", "calibration_size": calibration_size}
    paths = {
        ("ExecuTorch", "int8"): et.export(deployed, spec, work / f"{variant}_int8.pte",
                                          ExecuTorchOptions(precision="int8", **cal)).path,
        ("onnxruntime", "fp32"): onnx.export(deployed, spec, work / f"{variant}.onnx").path,
        ("onnxruntime", "int8"): onnx.export(deployed, spec, work / f"{variant}_int8.onnx",
                                             OnnxOptions(precision="int8", **cal)).path,
        ("LiteRT", "fp32"): tfl.export(deployed, spec, work / f"{variant}.tflite").path,
        ("LiteRT", "int8"): tfl.export(deployed, spec, work / f"{variant}_int8.tflite",
                                       TFLiteOptions(quantize="int8", **cal)).path,
        ("ExecuTorch", "fp32"): ours.path}
    x = np.random.default_rng(1).standard_normal((1, 3, img_size, img_size)).astype(np.float32)
    recipe_call, recipe_logits = executorch_call(recipe_path, x)
    ours_call, ours_logits = executorch_call(ours.path, x)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    fns = {"recipe": recipe_call, "ours": ours_call}
    fns.update({f"{rt} {p}": (executorch_call(path, x)[0] if rt == "ExecuTorch" and p == "int8" else
                              onnx_call(path, x) if rt == "onnxruntime" else litert_call(path) if rt == "LiteRT"
                              else None) for (rt, p), path in paths.items() if (rt, p) != ("ExecuTorch", "fp32")})
    res = time_interleaved(fns, iters)
    res["ExecuTorch fp32"] = res["ours"]
    inspect_ours, inspect_recipe = et.inspect(ours.path).extra, et.inspect(recipe_path).extra
    return {"variant": variant, "img_size": img_size, "latency": res,
            "ratio_median": res["ours"]["median_ms"] / res["recipe"]["median_ms"],
            "ratio_min": res["ours"]["min_ms"] / res["recipe"]["min_ms"],
            "max_abs_vs_timm": {"recipe": float(np.abs(recipe_logits() - want).max()),
                                "ours": float(np.abs(ours_logits() - want).max())},
            "export_seconds": {"recipe": round(recipe_s, 1), "ours": round(ours_s, 1)},
            "partitions": {"recipe": inspect_recipe["xnnpack_partitions"], "ours": inspect_ours["xnnpack_partitions"]},
            "outside_delegate": {"recipe": sum(inspect_recipe["non_delegated_ops"].values()),
                                 "ours": sum(inspect_ours["non_delegated_ops"].values())}}


def print_results(results: list[dict], iters: int) -> None:
    from evit_export.core.machine import cpu_flags, machine_description

    print(f"\nmachine: {machine_description()}; CPU flags: {' '.join(cpu_flags()) or 'not reported'}")
    print(f"1 thread, batch 1, {iters} interleaved rounds; median (min) ms\n")
    print("(1) ExecuTorch fp32: evit-export vs the documented recipe on timm's model, same weights")
    print(f"{'variant':8} {'recipe ms':>16} {'ours ms':>16} {'ours/recipe':>12} {'partitions r/o':>15} "
          f"{'outside r/o':>12} {'max|Δ| vs timm r/o':>20} {'export s r/o':>13}")
    for r in results:
        lat = r["latency"]
        print(f"{r['variant'].upper():8} {lat['recipe']['median_ms']:8.3f} ({lat['recipe']['min_ms']:.3f}) "
              f"{lat['ours']['median_ms']:8.3f} ({lat['ours']['min_ms']:.3f}) {r['ratio_median']:7.3f} "
              f"({r['ratio_min']:.3f}) {r['partitions']['recipe']:>7}/{r['partitions']['ours']:<7} "
              f"{r['outside_delegate']['recipe']:>6}/{r['outside_delegate']['ours']:<5} "
              f"{r['max_abs_vs_timm']['recipe']:9.1e}/{r['max_abs_vs_timm']['ours']:<9.1e} "
              f"{r['export_seconds']['recipe']:6.0f}/{r['export_seconds']['ours']:<6.0f}")
    print("\n(2) the same weights in three runtimes (evit-export's exports; int8 static, random calibration)")
    print(f"{'variant':8} {'runtime':12} {'fp32 ms':>16} {'int8 ms':>16} {'int8 speedup':>13}")
    for r in results:
        lat = r["latency"]
        for rt in ("onnxruntime", "LiteRT", "ExecuTorch"):
            a, b = lat[f"{rt} fp32"], lat[f"{rt} int8"]
            print(f"{r['variant'].upper():8} {rt:12} {a['median_ms']:8.3f} ({a['min_ms']:.3f}) "
                  f"{b['median_ms']:8.3f} ({b['min_ms']:.3f}) {a['median_ms'] / b['median_ms']:12.2f}x")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["m0", "m5"])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--calibration-size", type=int, default=16)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-executorch-") as d:
        for variant in args.variants:
            results.append(bench_variant(variant, Path(d), args.iters, args.calibration_size, args.img_size))
            print_results(results[-1:], args.iters)  # each variant as soon as it is measured (M5 takes long)
            sys.stdout.flush()
    if args.json:
        from evit_export.core.machine import cpu_flags, machine_description

        args.json.write_text(json.dumps({"machine": machine_description(), "cpu_flags": cpu_flags(),
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
