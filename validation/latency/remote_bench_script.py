"""Latency and memory of one model file, measured on the machine this script runs on:
load time, first call, p50 / p90 / p99 and the resident peak above the baseline taken
after the runtime's import (the opener's optional ``import_runtime()``).

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


def _status_bytes(key: str):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _maxrss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def start_peak_tracking():
    """(baseline bytes, method, resettable): Linux resets its resident high-water mark
    through /proc/self/clear_refs; elsewhere the growth of ru_maxrss is a lower bound.
    (The same rule as evit_export.validation.memory, which this script cannot import.)"""
    rss = _status_bytes("VmRSS")
    if rss is not None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return _status_bytes("VmRSS") or rss, "VmHWM above VmRSS, high-water mark reset (/proc/self/clear_refs)", True
        except OSError:
            pass
    return _maxrss_bytes(), "growth of ru_maxrss (high-water mark not resettable here: a lower bound)", False


def peak_above(baseline) -> int:
    rss, _, resettable = baseline
    hwm = _status_bytes("VmHWM") if resettable else None
    return max(0, (hwm if hwm is not None else _maxrss_bytes()) - rss)


def percentile(sorted_times, q: float) -> float:
    """Nearest rank above: the p99 of 30 runs is the slowest run."""
    import math

    return round(sorted_times[min(len(sorted_times) - 1, max(0, math.ceil(q / 100 * len(sorted_times)) - 1))], 3)


# @@OPEN_MODEL@@


def measure(args):
    """Load, first call, timed calls and the resident peak of one model."""
    if "import_runtime" in globals():  # the opener's runtime import, outside the memory baseline
        import_runtime()  # noqa: F821 (inserted above)
    baseline = start_peak_tracking()
    t0 = time.perf_counter()
    opened = open_model(args.model, args.threads, args.batch)  # noqa: F821 (inserted above)
    load_ms = (time.perf_counter() - t0) * 1e3
    call, runtime, shape = opened[:3]
    t0 = time.perf_counter()
    call()
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(2):
        call()
    times = []
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    peak = peak_above(baseline)
    plan = opened[3] if len(opened) > 3 else None
    memory = {"peak_rss": baseline[1], "baseline_rss_bytes": baseline[0], **({"runtime_plan": plan} if plan else {})}
    return runtime, shape, times, round(load_ms, 3), round(first_ms, 3), peak, memory


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    try:
        runtime, shape, times, load_ms, first_ms, peak, memory = measure(args)
    except Exception as e:  # report any runtime failure as data, not a traceback over SSH
        fail(CANNOT_RUN, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    times.sort()
    median = round(statistics.median(times), 3)
    print(json.dumps({"runtime": runtime, "batch": int(shape[0]) if shape else 1, "threads": args.threads or None,
                      "median_ms": median, "p50_ms": median, "p90_ms": percentile(times, 90),
                      "p99_ms": percentile(times, 99), "min_ms": round(times[0], 3), "load_ms": load_ms,
                      "first_ms": first_ms, "peak_rss_bytes": peak, "memory": memory,
                      "iterations": len(times), "machine": machine(), "python": platform.python_version()}))


if __name__ == "__main__":
    main()
