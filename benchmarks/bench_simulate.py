"""How good is the latency simulator? Two sets of figures, each beside the naive
MACs-proportional baseline:

1. Host: the profile `devices calibrate --runtime onnxruntime --threads 1` fitted on timm
   models (never EfficientViT), asked for M0-M5 at 224 px batch 1, against onnxruntime
   on the project's own ONNX exports measured here (one thread; the 20th percentile of
   thread CPU time, as calibration measures, which is the latency uncontended by other
   processes; the wall-clock median beside it).
2. Phones: leave-one-out figures of the built-in profiles' fits on the shipped TFLite CSV
   (all rows, and the transformer rows alone).

    .venv/bin/python benchmarks/bench_simulate.py [--recalibrate] [--variants m0 m5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evit_export.core.machine import cpu_flags
from evit_export.core.machine import machine_description

CSV = Path(__file__).resolve().parents[1] / "validation" / "latency" / "data" / "mobile_tflite_calibration.csv"
PHONES = ("pixel4-cpu1-fp32", "iphonexs-cpu1-fp32", "s10-cpu1-fp32")


def host_profile(recalibrate: bool, console: Console):
    from evit_export.validation.latency.calibrate import REFERENCE_SET, calibrate
    from evit_export.validation.latency.profiles import user_profile_dir, load_profile_file

    cached = user_profile_dir() / "host-onnxruntime-1t.json"
    if cached.is_file() and not recalibrate:
        console.print(f"host profile: {cached.name} from the cache (--recalibrate to measure again)")
        return load_profile_file(cached)
    profile, _, _ = calibrate("onnxruntime", 1, list(REFERENCE_SET), log=lambda m: console.print(m, highlight=False))
    return profile


def _order_right(a: list[float], b: list[float]) -> bool:
    return sorted(range(len(a)), key=a.__getitem__) == sorted(range(len(b)), key=b.__getitem__)


def host_figures(variants: list[str], recalibrate: bool, console: Console) -> None:
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets import RunnerOptions, get_target
    from evit_export.targets.onnx.exporter import export_onnx
    from evit_export.validation.latency.calibrate import time_onnx_models
    from evit_export.validation.latency.measure import measure_latency
    from evit_export.validation.latency.simulate import estimate, model_features

    profile = host_profile(recalibrate, console)
    per_gmac = profile.validation["flops_proportional"]["ms_per_gmac"]
    table = Table(title=f"host: {profile.name} ({profile.provenance()}) vs onnxruntime, 224 px, batch 1")
    for col in ("variant", "measured CPU ms (p20)", "wall median ms", "estimate ms", "error", "MACs-prop. ms", "error"):
        table.add_column(col, justify="right")
    measured, estimated, flops, exported = [], [], [], []
    with tempfile.TemporaryDirectory() as d:
        for variant in variants:
            deployed, spec = deploy_for_export(variant, seed=0)
            art = export_onnx(deployed, spec, Path(d) / f"{variant}.onnx")
            feats = model_features(deployed, spec.img_size)
            exported.append((variant, art.path, spec.img_size, feats))
        # Timed together, as calibration times its reference set (time_onnx_models).
        cpu = time_onnx_models([(path, size) for _, path, size, _ in exported], threads=1)
        for (variant, path, size, feats), cpu_ms in zip(exported, cpu):
            with get_target("onnx").open(path, options=RunnerOptions(threads=1)) as runner:
                wall = measure_latency(runner, iterations=50).median_ms
            est = estimate(feats, profile, variant, size).estimate_ms
            base = feats.total_macs / 1e9 * per_gmac
            measured.append(cpu_ms), estimated.append(est), flops.append(base)
            table.add_row(variant, f"{cpu_ms:.2f}", f"{wall:.2f}", f"{est:.2f}", f"{est / cpu_ms - 1:+.1%}",
                          f"{base:.2f}", f"{base / cpu_ms - 1:+.1%}")
    console.print(table)
    err = statistics.median(abs(e / m - 1) for e, m in zip(estimated, measured))
    base_err = statistics.median(abs(e / m - 1) for e, m in zip(flops, measured))
    console.print(f"host median error: simulator {err:.1%} (order right: {_order_right(estimated, measured)}), "
                  f"MACs-proportional {base_err:.1%} (order right: {_order_right(flops, measured)})")


def phone_figures(console: Console) -> None:
    from evit_export.validation.latency.fit import attach_features, fit_structure, read_measurements, validate

    table = Table(title=f"phones: leave-one-out on {CSV.name} (each row predicted by a fit on all others)")
    for col in ("device", "rows", "LOO median", "LOO rank corr", "transformers LOO median", "transformers rank corr",
                "MACs-prop. LOO median", "MACs-prop. transformers"):
        table.add_column(col, justify="right")
    for phone in PHONES:
        rows = read_measurements(CSV, phone)
        attach_features(rows)
        _, v = validate(rows, *fit_structure("cpu-interpreter", ["tflite"]))  # as `devices fit` fits them
        held, base = v["held_out_transformers"], v["flops_proportional"]
        table.add_row(phone, str(v["rows"]), f"{v['loo_median_error']:.1%}", f"{v['loo_rank_corr']:.2f}",
                      f"{held['median_error']:.1%} (n={held['rows']})", f"{held['rank_corr']:.2f}",
                      f"{base['loo_median_error']:.1%}", f"{base['held_out_transformers']['median_error']:.1%}")
    console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=["m0", "m1", "m2", "m3", "m4", "m5"])
    ap.add_argument("--recalibrate", action="store_true", help="run devices calibrate first")
    ap.add_argument("--skip-host", action="store_true")
    args = ap.parse_args()
    console = Console(width=200)
    console.print(f"machine: {machine_description()}; load average {os.getloadavg()[0]:.1f}")
    console.print(f"CPU flags: {' '.join(cpu_flags())}")
    if not args.skip_host:
        host_figures(args.variants, args.recalibrate, console)
    phone_figures(console)


if __name__ == "__main__":
    main()
