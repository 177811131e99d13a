"""Latency of one model file, measured on the machine this script runs on.

Shipped to a remote device by ``evit-export bench --remote`` and run there with the
device's own Python. Self-contained on purpose: standard library plus the runtime
that opens the model, because nothing of evit-export is installed on the device. The
format's own ``open_model`` (``Target.remote_bench_source``) is inserted at the marker
below before the script is shipped (``remote.remote_script``).
Prints one JSON object; exit status 3 names a missing runtime, 4 a model it cannot run.

    python remote_bench_script.py MODEL [--threads N] [--iterations N] [--batch N]
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

MISSING_RUNTIME, CANNOT_RUN = 3, 4


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Hardware", "Model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def fail(code: int, **info):
    print(json.dumps(info))
    sys.exit(code)


def random_input(shape, dtype_name: str, np):
    rng = np.random.default_rng(0)
    if "int" in dtype_name:
        return rng.integers(0, 255 if "uint" in dtype_name else 127, size=shape).astype(dtype_name)
    return rng.standard_normal(shape).astype(dtype_name)


# @@OPEN_MODEL@@


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    try:
        call, runtime, shape = open_model(args.model, args.threads, args.batch)  # noqa: F821 (inserted above)
        for _ in range(3):
            call()
        times = []
        for _ in range(args.iterations):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1e3)
    except Exception as e:  # report any runtime failure as data, not a traceback over SSH
        fail(CANNOT_RUN, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    times.sort()
    print(json.dumps({"runtime": runtime, "batch": int(shape[0]) if shape else 1, "threads": args.threads or None,
                      "median_ms": round(statistics.median(times), 3),
                      "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 3),
                      "min_ms": round(times[0], 3), "iterations": len(times), "machine": machine(),
                      "python": platform.python_version()}))


if __name__ == "__main__":
    main()
