"""int8 you can trust: quality on held-out real images and speed over fp32, per model x
runtime x mode, with the CPU flags that decide whether int8 pays.

    .venv/bin/python benchmarks/bench_int8.py [--modes default,full-integer,percentile,entropy]
                                              [--speed m0,m5] [--ceiling m0] [--steps 60] [--json OUT]

Models judged (64 px, as users fine-tune them):
- demo: EfficientViT-M0 trained on the embedded digits (the demo model; trained on first use),
  judged on the held-out digits;
- photos: M0 from realistic random weights fine-tuned for ``--steps`` steps on a 4-class set
  of real photos (patches of the two photographs scikit-learn ships), calibrated on one
  folder that the export splits itself, judged on the images it held out.
Modes: default (the export's defaults), full-integer (keep_float=none), and for ONNX each
calibration method (percentile, entropy). Every figure comes from ``check`` on images the
quantizer never saw; speed-up is fp32 median / int8 median, 1 thread, at the model's size.
``--speed`` also times the default int8 of M0/M5 at 224 px (realistic random weights,
real-photo calibration, exported without the check) against fp32, in onnxruntime and LiteRT.
``--ceiling`` times fp32 and full-integer int8 op kind by op kind in onnxruntime and prints
the best any mix of float and int8 layers could reach on this CPU (an upper bound).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = (("china", 0), ("china", 1), ("flower", 0), ("flower", 1))  # photo, top/bottom half


def write_photo_folders(root: Path, per_class: dict[str, int], seed: int = 0) -> dict[str, Path]:
    """ImageFolders of square crops (64..200 px) from scikit-learn's two real photos;
    class = photo and half (top / bottom). Returns {split: folder}."""
    import sklearn
    from PIL import Image

    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    photos = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.jpg"))}
    rng = np.random.default_rng(seed)
    out = {}
    for split, count in per_class.items():
        for name, half in CLASSES:
            img = photos[name]
            h, w, _ = img.shape
            target = root / split / f"{name}_{('top', 'bottom')[half]}"
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                size = int(rng.integers(64, 200))
                top = int(rng.integers(half * h // 2, half * h // 2 + h // 2 - size))
                left = int(rng.integers(0, w - size))
                Image.fromarray(np.ascontiguousarray(img[top:top + size, left:left + size])).save(target / f"{i}.png")
        out[split] = root / split
    return out


def finetune_on_photos(train: Path, out: Path, steps: int, img_size: int = 64) -> Path:
    """M0 from realistic random weights, fine-tuned ``steps`` AdamW steps on ``train``."""
    import torch

    from evit_export import api
    from evit_export.core.preprocess import load_images, normalize
    from evit_export.models.checkpoint import save_project_checkpoint

    labels = sorted(p.name for p in train.iterdir())
    model = api.load_model("m0", num_classes=len(labels), img_size=img_size, seed=0, labels=labels)
    pixels, classes, _, _ = load_images(train, model.spec)
    x = torch.from_numpy(normalize(pixels, model.spec)).float()
    y = torch.tensor([labels.index(c) for c in classes])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=g)
        batch = x[idx].flip(3) if step % 2 else x[idx]
        loss = torch.nn.functional.cross_entropy(model(batch), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return save_project_checkpoint(model, model.spec, out)


def _options(fmt: str, mode: str, calibration):
    from evit_export.targets.onnx import OnnxOptions
    from evit_export.targets.tflite import TFLiteOptions

    if fmt == "onnx":
        kw = {"keep_float": "none"} if mode == "full-integer" else {}
        if mode in ("percentile", "entropy"):
            kw["calibration_method"] = mode
        return OnnxOptions(precision="int8", calibration_data=calibration, **kw)
    return TFLiteOptions(quantize="int8", calibration_data=calibration, analyze=False,
                         **({"keep_float": "none"} if mode == "full-integer" else {}))


def _fp32_options(fmt: str):
    from evit_export.targets.onnx import OnnxOptions
    from evit_export.targets.tflite import TFLiteOptions

    return OnnxOptions() if fmt == "onnx" else TFLiteOptions(analyze=False)


def _median_ms(path: Path, iterations: int) -> float:
    from evit_export import api

    return api.bench([path], threads=1, iterations=iterations)[0].median_ms


def judge(label: str, checkpoint: Path, calibration, images, fmt: str, mode: str, work: Path, iters: int) -> dict:
    from evit_export import api

    model = api.load_model(checkpoint=checkpoint)
    suffix = ".onnx" if fmt == "onnx" else ".tflite"
    started = time.perf_counter()
    art = api.export(model, fmt, _options(fmt, mode, calibration), out=work / f"{label}_{fmt}_{mode}{suffix}")
    export_s = time.perf_counter() - started
    fp32 = work / f"{label}_{fmt}_fp32{suffix}"
    if not fp32.exists():
        api.export(model, fmt, _fp32_options(fmt), out=fp32)
    report = api.check(art.path, images=images)
    kept = (art.info.get("int8") or {}).get("kept_float", [])
    return {"model": label, "runtime": report.runtime, "mode": mode, "n": report.n,
            "cosine_mean": report.cosine_mean, "cosine_min": report.cosine_min, "sqnr_db": report.sqnr_db,
            "top1": report.top1_agreement, "top5": report.top5_agreement, "passed": report.passed,
            "kept_float": kept, "export_s": round(export_s, 1),
            "speedup": _median_ms(fp32, iters) / _median_ms(art.path, iters)}


def speed_224(variant: str, fmt: str, calibration: Path, work: Path, iters: int) -> dict:
    from evit_export import api

    model = api.load_model(variant, img_size=224, seed=0)
    suffix = ".onnx" if fmt == "onnx" else ".tflite"
    int8 = api.export(model, fmt, _options(fmt, "default", calibration), out=work / f"{variant}_224_int8{suffix}")
    fp32 = api.export(model, fmt, _fp32_options(fmt), out=work / f"{variant}_224_fp32{suffix}")
    ms32, ms8 = _median_ms(fp32.path, iters), _median_ms(int8.path, iters)
    return {"model": f"{variant} 224px random", "runtime": fmt, "fp32_ms": ms32, "int8_ms": ms8,
            "speedup": ms32 / ms8, "kept_float": (int8.info.get("int8") or {}).get("kept_float", [])}


def onnx_time_by_kind(path: Path, runs: int = 50) -> dict[str, float]:
    """ms per op kind in onnxruntime (1 thread, the optimized graph it runs), with float and
    int8 ops of the same job under one name (QLinearConv and Conv are both "conv ..."),
    so the two precisions can be compared kind by kind; convs are told apart by what they
    compute (depthwise, 1x1, kxk), which the profiler does not say."""
    return {kind: ms for kind, (ms, _) in onnx_nodes_by_kind(path, runs).items()}


def onnx_nodes_by_kind(path: Path, runs: int = 50) -> dict[str, tuple[float, int]]:
    """Op kind -> (profiled ms, how many nodes), the kinds of ``onnx_time_by_kind``."""
    import onnx
    from collections import Counter

    from evit_export.targets.onnx.inspector import profile_node_time

    nodes, graph = profile_node_time(path, runs=runs)
    weights = {i.name: list(i.dims) for i in graph.initializer}
    totals: Counter = Counter()
    counts: Counter = Counter()
    for node in graph.node:
        if node.name not in nodes:
            continue
        op = node.op_type.replace("QLinear", "").replace("Fused", "").replace("QGemm", "Gemm").lower()
        if op == "conv":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            w = weights.get(node.input[3 if node.op_type == "QLinearConv" else 1], [0, 0, 1, 1])
            op = "conv depthwise" if attrs.get("group", 1) > 1 else f"conv {'1x1' if w[-1] == 1 else 'kxk'}"
        elif op in ("transpose", "reshape", "split", "concat", "flatten", "reorderinput", "reorderoutput"):
            op = "data movement"
        elif op in ("quantizelinear", "dequantizelinear"):
            op = "float<->int8"
        totals[op] += nodes[node.name][1]
        counts[op] += 1
    return {op: (totals[op], counts[op]) for op in totals}


def onnx_int8_ceiling(variant: str, calibration: Path, work: Path) -> dict:
    """How fast can int8 be in onnxruntime on this CPU, at best? fp32 and full-integer int8
    timed kind by kind: keeping each kind in whichever precision runs it faster, with
    conversions free, is an upper bound on any mix of float and int8 layers."""
    from evit_export import api

    model = api.load_model(variant, img_size=224, seed=0)
    fp32 = api.export(model, "onnx", _fp32_options("onnx"), out=work / f"{variant}_ceiling_fp32.onnx").path
    int8 = api.export(model, "onnx", _options("onnx", "full-integer", calibration),
                      out=work / f"{variant}_ceiling_int8.onnx").path
    t32, t8 = onnx_time_by_kind(fp32), onnx_time_by_kind(int8)
    best = sum(min(t32.get(k, 0.0), t8[k]) if k in t32 else t8[k] for k in t8 if k != "float<->int8")
    best += sum(v for k, v in t32.items() if k not in t8)
    return {"variant": variant, "fp32_ms": t32, "int8_ms": t8, "full_integer_speedup": sum(t32.values()) /
            sum(t8.values()), "ceiling_speedup": sum(t32.values()) / best}


def print_ceiling(c: dict) -> None:
    print(f"\n{c['variant']} 224px in onnxruntime, time per op kind (profiled, 1 thread): fp32 vs full-integer int8")
    for kind in sorted(set(c["fp32_ms"]) | set(c["int8_ms"]), key=lambda k: -c["fp32_ms"].get(k, 0)):
        a, b = c["fp32_ms"].get(kind), c["int8_ms"].get(kind)
        ratio = f"{a / b:5.2f}x" if a and b else "    -"
        print(f"  {kind:16s} fp32 {a or 0:6.3f} ms  int8 {b or 0:6.3f} ms  {ratio}")
    print(f"  full-integer {c['full_integer_speedup']:.2f}x; ceiling (each kind in its faster precision, "
          f"conversions free): {c['ceiling_speedup']:.2f}x")


def _fmt(v, pct=False):
    if v is None:
        return "exact"
    return f"{100 * v:.1f}%" if pct else f"{v:.4f}"


def print_table(rows: list[dict]) -> None:
    print(f"{'model':8s} {'runtime':12s} {'mode':12s} {'n':>4s} {'cos mean':>8s} {'cos min':>8s} {'SQNR dB':>8s} "
          f"{'top-1':>6s} {'top-5':>6s} {'speed-up':>8s} {'verdict':7s} kept in float")
    for r in rows:
        sqnr = "exact" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}"
        print(f"{r['model']:8s} {r['runtime']:12s} {r['mode']:12s} {r['n']:4d} {_fmt(r['cosine_mean']):>8s} "
              f"{_fmt(r['cosine_min']):>8s} {sqnr:>8s} {_fmt(r['top1'], True):>6s} {_fmt(r['top5'], True):>6s} "
              f"{r['speedup']:7.2f}x {'PASS' if r['passed'] else 'FAIL':7s} {', '.join(r['kept_float']) or '-'}")


def main(argv=None) -> int:
    from evit_export.core.machine import cpu_flags, machine_description
    from evit_export.targets.calibration import cpu_int8_weight_bits

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="default,full-integer,percentile,entropy")
    ap.add_argument("--models", default="demo,photos")
    ap.add_argument("--runtimes", default="onnx,tflite")
    ap.add_argument("--speed", default="", help="variants timed at 224 px, e.g. m0,m5")
    ap.add_argument("--ceiling", default="", help="variants whose onnxruntime int8 ceiling is measured kind by "
                    "kind at 224 px, e.g. m0")
    ap.add_argument("--steps", type=int, default=60, help="fine-tuning steps of the photo model")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/default"), help="the demo model's run folder")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    print(f"machine: {machine_description()}")
    print(f"CPU flags: {' '.join(cpu_flags())}")
    bits, why = cpu_int8_weight_bits()
    print(f"ONNX int8 weight bits by default here: {bits} ({why})")
    rows, speed = [], []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as d:
        work = Path(d)
        folders = write_photo_folders(work / "photos", {"train": 120, "calib": 160})
        cases = {}
        if "demo" in args.models:
            from evit_export.training import ensure_default_model

            cases["demo"] = (ensure_default_model(args.run_dir), None, None)
        if "photos" in args.models:
            ckpt = finetune_on_photos(folders["train"], work / "m0_photos.safetensors", args.steps)
            cases["photos"] = (ckpt, folders["calib"], folders["calib"])
        for label, (ckpt, calibration, images) in cases.items():
            for fmt in args.runtimes.split(","):
                for mode in args.modes.split(","):
                    if fmt == "tflite" and mode in ("percentile", "entropy"):
                        continue  # TensorFlow's converter calibrates min/max only
                    rows.append(judge(label, ckpt, calibration, images, fmt, mode, work, args.iters))
                    print_table(rows[-1:])
                    sys.stdout.flush()
        for variant in filter(None, args.speed.split(",")):
            for fmt in args.runtimes.split(","):
                speed.append(speed_224(variant, fmt, folders["calib"], work, args.iters))
        ceilings = [onnx_int8_ceiling(v, folders["calib"], work) for v in filter(None, args.ceiling.split(","))]
    print("\nquality on held-out images (int8 vs PyTorch) and speed-up over fp32 (1 thread, 64 px):")
    print_table(rows)
    if speed:
        print("\nspeed at 224 px, default int8 vs fp32, 1 thread:")
        for s in speed:
            print(f"{s['model']:18s} {s['runtime']:7s} fp32 {s['fp32_ms']:7.2f} ms  int8 {s['int8_ms']:7.2f} ms  "
                  f"{s['speedup']:.2f}x  kept in float: {', '.join(s['kept_float']) or '-'}")
    for c in ceilings:
        print_ceiling(c)
    if speed or ceilings:
        if not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu_flags()):
            print("this CPU has no VNNI: int8 is not expected to beat fp32 here (no int32 dot product)")
    if args.json:
        args.json.write_text(json.dumps({"cpu_flags": cpu_flags(), "rows": rows, "speed": speed,
                                         "ceilings": ceilings}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
