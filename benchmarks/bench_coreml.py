"""CoreML target figures: M0 conversion time and MIL-interpreter throughput.

    .venv/bin/python benchmarks/bench_coreml.py [--variant m0] [--precision fp16] [-n 32] [--batch 1]

Conversion time is the whole ``CoreMLTarget.export`` call (trace, convert, save); the
interpreter figure is images per second of the MIL interpreter runner's ``run`` on
seeded inputs after one warm-up image, one process, one BLAS thread (the runner's
default). The CPU's SIMD flags are printed beside the figures.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    from evit_export.targets.coreml.options import CoreMLPrecision, InputKind  # no coremltools yet

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="m0")
    ap.add_argument("--precision", default="fp16", choices=[str(p) for p in CoreMLPrecision])
    ap.add_argument("--input", default="image", choices=[str(k) for k in InputKind])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("-n", type=int, default=32, help="images to time")
    args = ap.parse_args(argv)

    from evit_export.targets import get_target  # tf_safe() before coremltools

    target = get_target("coreml")
    from evit_export.core.preprocess import seeded_pixels
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets.coreml import CoreMLOptions, CoreMLRunnerOptions
    from evit_export.core.machine import cpu_flags

    options = CoreMLOptions(precision=args.precision, input=args.input, batch=args.batch,
                            output="logits" if args.batch > 1 else "classifier")

    t0 = time.perf_counter()
    import coremltools  # noqa: F401  (once per process; timed apart from the conversion)

    import_seconds = time.perf_counter() - t0
    deployed, spec = deploy_for_export(args.variant, seed=0)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / f"{args.variant}.mlpackage"
        t0 = time.perf_counter()
        artifact = target.export(deployed, spec, out, options)
        convert = time.perf_counter() - t0
        with target.open(out, options=CoreMLRunnerOptions(native=False)) as runner:
            pixels = seeded_pixels(args.n, spec.img_size, seed=0)
            runner.run(pixels[: args.batch])  # warm-up (weight layouts are cached on first use)
            t0 = time.perf_counter()
            runner.run(pixels)
            elapsed = time.perf_counter() - t0
    print(f"EfficientViT-{args.variant.upper()} {args.precision} {args.input} input, batch {args.batch}")
    print(f"conversion (trace + convert + save + seal): {convert:.1f} s "
          f"(trace + coremltools.convert {artifact.info['convert_seconds']:.1f} s); importing coremltools "
          f"took {import_seconds:.1f} s before that")
    print(f"MIL interpreter: {args.n / elapsed:.1f} img/s ({1000 * elapsed / args.n:.1f} ms/img, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    print(f"CPU flags: {' '.join(cpu_flags())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
