"""Measured latency and memory of any Runner (written once against the Runner protocol).

``measure_latency`` times an opened runner: p50 / p90 / p99 over the timed runs, and the
first call's time when the runner is fresh. ``bench_artifact`` measures what a device
pays for one artifact from the start: the runtime's load (session / interpreter /
program creation), the first inference, the steady-state percentiles, and the resident
high-water mark above a baseline taken after the runtime is imported and before the
model is loaded (``validation.memory``), plus the runtime's own memory plan where it
reports one. A high-water mark is only honest in a process that has run nothing else:
a freed model's pages stay with the allocator and hide the next one's, so
``bench_in_fresh_process`` runs ``bench_artifact`` in a new interpreter per artifact:

    python -m evit_export.validation.latency.measure REQUEST.json RESULT.json
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from evit_export.validation import memory

from evit_export.core.errors import UserError
from evit_export.core.machine import machine_description
from evit_export.core.preprocess import seeded_pixels
from evit_export.targets import open_artifact, runner_options_for
from evit_export.core.jsonio import dumps_strict
from evit_export.core.isolation import die_with_parent


@dataclass
class Latency:
    runtime: str
    batch: int
    threads: int | None
    median_ms: float
    p90_ms: float
    min_ms: float
    images_per_s: float
    iterations: int
    kind: str = "measured"  # measured on this machine; simulated figures say "estimate"
    machine: str = ""
    # Median CPU time of the calling thread per call: with one runtime thread, the latency
    # the model would have alone on the machine even when other processes share the cores.
    cpu_ms: float | None = None
    p50_ms: float | None = None  # the median again, under the name tail-latency tables use
    p99_ms: float | None = None
    # What loading costs: session / interpreter / program creation, then the first call
    # (lazy initialisation, weight packing); None when the runner was opened elsewhere.
    load_ms: float | None = None
    first_ms: float | None = None
    # Resident high-water mark above the baseline taken after the runtime's import and
    # before the model's load: what the model costs the process (None: not measured).
    peak_rss_bytes: int | None = None
    # How peak_rss_bytes was read, and the runtime's own memory plan where it has one.
    memory: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def percentile_ms(times_ms: np.ndarray, q: float) -> float:
    """The ``q``-th percentile of ``times_ms``, nearest-rank above (a p99 of 30 runs is
    the slowest run, not an interpolation below it)."""
    return round(float(np.percentile(times_ms, q, method="higher")), 3)


def measure_latency(runner, batch: int = 1, threads: int | None = None, warmup: int = 3,
                    iterations: int = 20, min_seconds: float = 0.0, fresh: bool = False) -> Latency:
    """p50 / p90 / p99 wall time of ``runner``'s inference on a batch of seeded images.
    ``fresh``: nothing has run through ``runner`` yet, so the first warm-up call is its
    first inference (``first_ms``)."""
    pixels = seeded_pixels(batch, runner.spec.img_size, seed=0)
    call = runner.timed_call(pixels)
    first_ms = None
    for i in range(max(warmup, 1 if fresh else 0)):
        t0 = time.perf_counter()
        call()
        if i == 0 and fresh:
            first_ms = round((time.perf_counter() - t0) * 1e3, 3)
    times, cpu = [], []
    start = time.perf_counter()
    while len(times) < iterations or time.perf_counter() - start < min_seconds:
        t0, c0 = time.perf_counter(), time.thread_time()
        call()
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    times_ms = np.asarray(times) * 1e3
    median = round(float(statistics.median(times_ms)), 3)
    return Latency(runtime=runner.name, batch=batch, threads=threads, median_ms=median,
                   p90_ms=percentile_ms(times_ms, 90), min_ms=round(float(times_ms.min()), 3),
                   images_per_s=round(batch / median * 1e3, 1), iterations=len(times),
                   machine=machine_description(), cpu_ms=round(statistics.median(cpu) * 1e3, 3), p50_ms=median,
                   p99_ms=percentile_ms(times_ms, 99), first_ms=first_ms)


def bench_artifact(path: Path, threads: int | None = 1, iterations: int = 30, runner_settings: dict | None = None,
                   min_seconds: float = 0.0) -> Latency:
    """Load, first-call, steady-state and memory figures of ``path`` measured in this
    process; honest only in a process that has loaded no other model (see the module
    docstring)."""

    path, target, spec = open_artifact(path)
    options = runner_options_for(target, threads=threads, **(runner_settings or {}))
    target.import_runtime()
    baseline = memory.start_peak_tracking()
    t0 = time.perf_counter()
    with target.open(path, spec=spec, options=options) as runner:
        load_ms = round((time.perf_counter() - t0) * 1e3, 3)
        latency = measure_latency(runner, batch=spec.batch or 1, threads=threads, iterations=iterations,
                                  min_seconds=min_seconds, fresh=True)
        peak = memory.peak_above(baseline)  # before the plan is read: reading it may allocate
        plan = runner.memory_plan()
        if not runner.deployment_runtime:
            latency.kind = "measured (checker, not a device runtime)"
    latency.load_ms, latency.peak_rss_bytes = load_ms, peak
    latency.memory = {"peak_rss": baseline.method, "baseline_rss_bytes": baseline.rss_bytes,
                      **({"runtime_plan": plan} if plan else {})}
    return latency


def bench_in_fresh_process(path: Path, threads: int | None = 1, iterations: int = 30,
                           runner_settings: dict | None = None, min_seconds: float = 0.0,
                           timeout: float = 900.0) -> Latency:
    """``bench_artifact`` in a new Python process (one per artifact: see the module docstring)."""
    import tempfile


    with tempfile.TemporaryDirectory(prefix="evit-bench-") as scratch:
        request, result = Path(scratch) / "request.json", Path(scratch) / "result.json"
        request.write_text(dumps_strict({"path": str(Path(path).resolve()), "threads": threads,
                                         "iterations": iterations, "runner_settings": runner_settings or {},
                                         "min_seconds": min_seconds}))
        try:
            proc = subprocess.run([sys.executable, "-m", __name__, str(request), str(result)],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"measuring {Path(path).name} took longer than {timeout:.0f} s: pass fewer "
                            "--iterations") from None
        if not result.is_file():
            lines = (proc.stderr or proc.stdout or "no output").strip().splitlines() or ["no output"]
            raise UserError(f"measuring {Path(path).name} failed (exit {proc.returncode}): {lines[-1]}")
        data = json.loads(result.read_text(encoding="utf-8"))
    if "error" in data:
        raise UserError(data["error"])
    return Latency(**data)


def _worker(request: Path, result: Path) -> int:
    die_with_parent()
    args = json.loads(request.read_text(encoding="utf-8"))
    try:
        answer = bench_artifact(Path(args["path"]), args["threads"], args["iterations"], args["runner_settings"],
                                args.get("min_seconds", 0.0))
        payload = answer.to_dict()
    except UserError as e:
        payload = {"error": str(e)}
    result.write_text(dumps_strict(payload), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_worker(Path(sys.argv[1]), Path(sys.argv[2])))
