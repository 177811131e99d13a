"""Measured latency of any Runner (written once against the Runner protocol)."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from evit_export.core.machine import machine_description
from evit_export.core.preprocess import seeded_pixels


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

    def to_dict(self) -> dict:
        return asdict(self)


def measure_latency(runner, batch: int = 1, threads: int | None = None, warmup: int = 3,
                    iterations: int = 20, min_seconds: float = 0.0) -> Latency:
    """Median/p90 wall time of ``runner.run`` on a batch of seeded images."""
    pixels = seeded_pixels(batch, runner.spec.img_size, seed=0)
    call = runner.timed_call(pixels)
    for _ in range(warmup):
        call()
    times, cpu = [], []
    start = time.perf_counter()
    while len(times) < iterations or time.perf_counter() - start < min_seconds:
        t0, c0 = time.perf_counter(), time.thread_time()
        call()
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    times_ms = np.asarray(times) * 1e3
    median = float(statistics.median(times_ms))
    return Latency(runtime=runner.name, batch=batch, threads=threads, median_ms=round(median, 3),
                   p90_ms=round(float(np.percentile(times_ms, 90)), 3), min_ms=round(float(times_ms.min()), 3),
                   images_per_s=round(batch / median * 1e3, 1), iterations=len(times),
                   machine=machine_description(), cpu_ms=round(statistics.median(cpu) * 1e3, 3))
