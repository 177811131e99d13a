"""Where a sweep's cells run: the executor interface and the local executor.

``SweepRun`` (``sweep/run.py``) decides *which* stages each cell needs and records what
comes back; an executor decides *where* they run:

    run_builds(run, cells, on_result, tick)    build+estimate of every cell in ``cells``
    run_measures(run, cells, on_result, tick)  measured latency, one cell at a time per place

``cells`` maps a cell id to ``(stages, fingerprints)``; ``on_result(updated_record,
fingerprints)`` is called on the driver's thread for each finished cell (it records,
saves and reports); ``tick()`` refreshes the progress line while cells work.

``LocalExecutor`` is the sweep as it always ran: ``--jobs`` cell processes on this
machine, latency one cell at a time afterwards. ``ray_executor.RayExecutor`` runs the
same worker process on a Ray cluster's nodes.
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Protocol

OnResult = Callable[[dict, dict], None]
Tick = Callable[[], None]


class CellExecutor(Protocol):
    name: str

    def describe(self) -> dict:
        """What results.json records about where the cells ran."""

    def prepare(self) -> None:
        """Connect and check what the options name, before the sweep touches --out (a
        cluster option that cannot work is a one-line error that writes nothing)."""

    def run_builds(self, run, cells: dict[str, tuple[list[str], dict]], on_result: OnResult, tick: Tick) -> None:
        ...

    def run_measures(self, run, cells: dict[str, tuple[list[str], dict]], on_result: OnResult,
                     tick: Tick) -> None:
        ...

    def close(self) -> None:
        ...


def exit_description(rc: int | None) -> str:
    """How a cell process ended, in words (``killed by SIGSEGV``, ``exit status 1``)."""
    if rc is None:
        return "no exit status"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit status {rc}"


class LocalExecutor:
    """``jobs`` cell processes at once on this machine; latency serially afterwards."""

    name = "local"

    def __init__(self, jobs: int = 1, cpu_count: int | None = None):
        import os

        self.jobs = max(1, jobs)
        # Threads each build process may use: the machine's cores shared by the jobs.
        self.worker_threads = max(1, (cpu_count or os.cpu_count() or 1) // self.jobs)

    def describe(self) -> dict:
        return {"kind": self.name, "jobs": self.jobs}

    def prepare(self) -> None:
        """Nothing to connect to: the processes start per cell."""

    def run_builds(self, run, cells, on_result, tick) -> None:
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = {pool.submit(run.run_cell, cell, stages, fps, self.worker_threads): fps
                       for cell, (stages, fps) in cells.items()}
            pending = set(futures)
            try:
                while pending:
                    finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        on_result(fut.result(), futures[fut])
                    tick()  # also refreshes the running count while cells work
            except BaseException:  # Ctrl-C: stop the cell processes now, not after they finish
                pool.shutdown(wait=False, cancel_futures=True)
                run.stop()
                raise

    def run_measures(self, run, cells, on_result, tick) -> None:
        # Latency: one cell at a time, nothing else of the sweep running (parallel timings are noise).
        for cell, (stages, fps) in cells.items():
            tick()
            on_result(run.run_cell(cell, stages, fps, run.config.threads), fps)

    def close(self) -> None:
        pass
