"""``sweep``: every variant × target × precision cell, exported, checked, timed and
estimated, with results.json / results.csv / report.html in one folder.

Resumable: results are rewritten atomically after every cell, and a re-run keeps each
stage of a cell whose inputs (fingerprint) are unchanged and whose artifact still has
its recorded sha256. Export and check run ``jobs`` cells at a time, each in its own
process (``sweep.worker``); latency is then measured one cell at a time with nothing
else of the sweep running, since parallel timings are noise.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.core.machine import cpu_flags, machine_description
from evit_export.core.jsonio import loads_strict, write_json_atomic
from evit_export.core.paths import strip_paths
from evit_export.packaging.report import write_report
from evit_export.sweep.executors import LocalExecutor, exit_description
from evit_export.sweep.results import (SCHEMA_VERSION, STAGES, load_results, new_record, sha256_artifact, utc_now,
                                       write_results)
from evit_export.sweep.stages import cell_options, check_device, device_info
from evit_export.sweep.worker import PARENT_ENV
from evit_export.targets import PrecisionNotApplicable, get_target, target_names
from evit_export.targets.base import PRECISION_FAMILIES as PRECISIONS
from evit_export.targets.calibration import DEFAULT_CALIBRATION_SIZE
from evit_export.sweep.results import RESULTS_CSV, RESULTS_JSON
from evit_export.models import canonical_variant
BUILD_STAGES = ("build", "estimate")  # run in parallel; "measure" runs alone afterwards


@dataclass(frozen=True)
class SweepConfig:
    variants: tuple[str, ...]
    targets: tuple[str, ...]
    precisions: tuple[str, ...]
    out: Path
    weights: dict = field(default_factory=dict)  # variant -> checkpoint (path or URL)
    data: str | None = None
    calibration_data: str | None = None
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    simulate: tuple[str, ...] = ()
    jobs: int = 1
    img_size: int | None = None
    num_classes: int | None = None
    seed: int = 0
    threads: int = 1  # latency measurement threads
    retry_failed: bool = False
    fresh: bool = False  # forget the earlier runs in ``out`` (their files there go)

    def validated(self) -> SweepConfig:
        """Checks every option before any work; returns a copy with canonical names and
        absolute folder paths (the worker processes share them)."""

        variants = tuple(dict.fromkeys(canonical_variant(v) for v in self.variants))
        if not variants or not self.targets or not self.precisions:
            raise UserError("nothing to sweep: give --variants, --targets and --precisions (comma-separated)")
        for t in self.targets:
            if t not in target_names():
                raise UserError(f"unknown target {t!r} in --targets: choose from {', '.join(target_names())}")
        for p in self.precisions:
            if p not in PRECISIONS:
                raise UserError(f"unknown precision {p!r} in --precisions: choose from {', '.join(PRECISIONS)}")
        for d in self.simulate:
            check_device(d)
        for flag, value, least in (("--jobs", self.jobs, 1), ("--threads", self.threads, 1),
                                   ("--calibration-size", self.calibration_size, 1),
                                   ("--img-size", self.img_size, 32), ("--num-classes", self.num_classes, 1)):
            if value is not None and value < least:
                raise UserError(f"{flag} {value} must be at least {least}")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise UserError(f"--out {self.out} is a file: give a folder for the sweep")
        weights = {canonical_variant(v): _checked_weights(ck) for v, ck in self.weights.items()}
        extra = sorted(set(weights) - set(variants))
        if extra:
            raise UserError(f"--weights names {', '.join(extra)}, which is not in --variants: add it or drop it")
        data = _checked_folder(self.data, "--data")
        cal = self.calibration_data
        if cal is not None and cal != "random":
            cal = _checked_folder(cal, "--calibration-data")
        return replace(self, variants=variants, targets=tuple(dict.fromkeys(self.targets)),
                       precisions=tuple(dict.fromkeys(self.precisions)), out=Path(self.out), weights=weights,
                       data=data, calibration_data=cal, simulate=tuple(dict.fromkeys(self.simulate)))

    def worker_config(self) -> dict:
        """What a cell process needs (absolute paths: never written to results)."""
        return {"weights": self.weights, "data": self.data, "calibration_data": self.calibration_data,
                "calibration_size": self.calibration_size, "simulate": list(self.simulate),
                "img_size": self.img_size, "num_classes": self.num_classes, "seed": self.seed,
                "threads": self.threads}

    def public(self) -> dict:
        """The config as results.json records it: folder and checkpoint names, no machine paths."""
        def name(p):
            return None if p is None else p if p == "random" or "://" in str(p) else Path(p).name

        return {"variants": list(self.variants), "targets": list(self.targets),
                "precisions": list(self.precisions), "weights": {v: name(c) for v, c in self.weights.items()},
                "data": name(self.data), "calibration_data": name(self.calibration_data),
                "calibration_size": self.calibration_size, "simulate": list(self.simulate), "jobs": self.jobs,
                "img_size": self.img_size, "num_classes": self.num_classes, "seed": self.seed,
                "threads": self.threads}


def _checked_folder(path, flag: str) -> str | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{flag} {path} is not a folder: pass a folder of images")
    return str(p.resolve())


def _checked_weights(checkpoint) -> str:
    if "://" in str(checkpoint):
        return str(checkpoint)
    p = Path(checkpoint)
    if not p.is_file():
        raise UserError(f"--weights checkpoint {checkpoint} does not exist: check the path")
    return str(p.resolve())


# --- planning and resuming ---------------------------------------------------------------

def plan_cells(config: SweepConfig) -> list[dict]:
    """Every cell of the matrix, in order; cells the format cannot do come back skipped
    with the target's own reason."""

    cells = []
    for variant in config.variants:
        for target_name in config.targets:
            target = get_target(target_name)
            for precision in config.precisions:
                rec = new_record(variant, target_name, precision)
                try:
                    if precision not in target.precisions:
                        raise PrecisionNotApplicable(f"{target_name} does not export {precision}")
                    rec["precision_label"] = cell_options(target, precision, config.worker_config()).precision_label()
                except PrecisionNotApplicable as e:
                    rec["status"], rec["verdict"], rec["reason"] = "skipped", "skipped", str(e)
                cells.append(rec)
    return cells


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


_weights_digests: dict[str, str] = {}


def _weights_identity(config: SweepConfig, variant: str) -> str:
    ck = config.weights.get(variant)
    if ck is None:
        return f"seed {config.seed}"
    if "://" in ck:
        return ck
    if ck not in _weights_digests:
        _weights_digests[ck] = sha256_artifact(Path(ck))
    return _weights_digests[ck]


def fingerprints(config: SweepConfig, rec: dict) -> dict:
    """Per stage, a digest of everything that stage's result depends on."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool = version("evit-export")
    except PackageNotFoundError:
        tool = "?"
    build = {"cell": rec["id"], "weights": _weights_identity(config, rec["variant"]), "img_size": config.img_size,
             "num_classes": config.num_classes, "data": config.data, "tool": tool,
             "calibration": [config.calibration_data, config.calibration_size] if rec["precision"] == "int8" else None}
    return {"build": _digest(build), "estimate": _digest([build, list(config.simulate)]),
            "measure": _digest([build, config.threads])}


def stages_to_run(rec: dict, previous: dict | None, fps: dict, config: SweepConfig) -> list[str]:
    """Which stages ``rec`` still needs, copying into ``rec`` what ``previous`` finished
    with the same inputs (and, for an artifact, the same sha256)."""
    import copy

    if previous is None or previous.get("status") == "skipped":
        return list(STAGES)
    if previous.get("status") == "failed":
        # A failure with unchanged inputs would fail again: keep it unless asked to retry.
        if not config.retry_failed and previous.get("failed_fingerprint") == fps["build"]:
            rec.update(copy.deepcopy(previous))
            return []
        return list(STAGES)
    kept = previous.get("stages") or {}
    if kept.get("build", {}).get("fingerprint") != fps["build"] or not previous.get("artifact"):
        return list(STAGES)
    artifact = config.out / previous["artifact"]
    if not artifact.exists() or sha256_artifact(artifact) != previous.get("sha256"):
        return list(STAGES)
    rec.update(copy.deepcopy(previous))
    todo = [s for s in STAGES if kept.get(s, {}).get("fingerprint") != fps[s]]
    for s in todo:
        rec["stages"].pop(s, None)
    if todo:
        rec.update(status="pending", verdict=None, finished_at=None)
    return todo


def finish_record(rec: dict) -> None:
    """Status and verdict once every stage ran (or one failed)."""
    if rec["status"] in ("failed", "skipped"):
        rec["verdict"] = "error" if rec["status"] == "failed" else "skipped"
        return
    if all(s in rec["stages"] for s in STAGES):
        eq = (rec.get("equivalence") or {}).get("passed")
        par = (rec.get("parity") or {}).get("passed", True)
        rec["status"], rec["verdict"] = "done", "pass" if eq and par else "fail"
        rec["finished_at"] = max(v["finished_at"] for v in rec["stages"].values())


# --- earlier runs in the same folder ------------------------------------------------------

# What a cell's result rests on besides its id, named as a user would (results.json keeps it).
_INPUT_NAMES = {"weights": "weights", "img_size": "--img-size", "num_classes": "--num-classes", "data": "--data",
                "calibration": "calibration", "seed": "--seed"}


def cell_inputs(config: SweepConfig, rec: dict) -> dict:
    """The inputs of a cell's export and checks, by name (and the weights' sha256)."""
    public = config.public()
    ck = config.weights.get(rec["variant"])
    weights = None if ck is None else f"{public['weights'][rec['variant']]} {_weights_identity(config, rec['variant'])[:12]}"
    return {"weights": weights, "seed": None if ck else config.seed, "img_size": config.img_size,
            "num_classes": config.num_classes, "data": public["data"],
            "calibration": [public["calibration_data"], config.calibration_size] if rec["precision"] == "int8" else None}


def changed_inputs(earlier: dict, now: dict, variant_in_run: bool) -> list[str]:
    """Names of the inputs that differ; a variant this run does not name keeps its weights."""
    keys = [k for k in now if variant_in_run or k not in ("weights", "seed")]
    return [_INPUT_NAMES[k] for k in keys if k in earlier and earlier[k] != now[k]]


def keep_earlier_cells(cells: list[dict], previous: dict, config: SweepConfig) -> list[dict]:
    """The earlier runs' cells this run's matrix does not include, kept as they are; one
    whose inputs this run changed is marked ``stale`` with the inputs that changed."""
    import copy

    planned = {c["id"] for c in cells}
    kept = []
    for cell_id, old in previous.items():
        if cell_id in planned:
            continue
        rec = copy.deepcopy(old)
        rec.pop("stale", None)
        if rec.get("status") != "skipped" and rec.get("inputs") is not None:
            changed = changed_inputs(rec["inputs"], cell_inputs(config, rec), rec["variant"] in config.variants)
            if changed:
                rec["stale"] = (f"built with other {', '.join(changed)} than the latest run: include it in the matrix "
                                "to run it again")
        kept.append(rec)
    return kept


def config_changes(earlier: dict | None, now: dict) -> list[str]:
    """What differs between the earlier run's recorded config and this one, in words."""
    if not earlier:
        return []
    changes = []
    for key in ("variants", "targets", "precisions", "weights", "data", "calibration_data", "calibration_size",
                "simulate", "img_size", "num_classes", "seed"):
        before, after = earlier.get(key), now.get(key)
        if before != after:
            def text(v):
                if isinstance(v, dict):
                    return ", ".join(f"{k}={x}" for k, x in v.items()) or "none"
                if isinstance(v, list):
                    return ",".join(map(str, v)) or "none"
                return "default" if v is None else str(v)
            changes.append(f"{key.replace('_', '-')} {text(before)} -> {text(after)}")
    return changes


def start_fresh(out: Path) -> None:
    """``--fresh``: remove what earlier sweeps wrote in ``out`` (and nothing else)."""
    import shutil


    for name in (RESULTS_JSON, RESULTS_CSV, "report.html"):
        (out / name).unlink(missing_ok=True)
    for sub in ("artifacts", "logs", ".sweep"):
        shutil.rmtree(out / sub, ignore_errors=True)


# --- running -----------------------------------------------------------------------------

class SweepRun:
    """The cells of one sweep, their worker processes and the results files."""

    def __init__(self, config: SweepConfig, cells: list[dict]):
        self.config, self.cells = config, cells
        self.by_id = {c["id"]: c for c in cells}
        self.lock = threading.Lock()
        self.running: dict[str, subprocess.Popen] = {}
        self.results = {"schema": SCHEMA_VERSION, "tool": "evit-export sweep", "config": config.public(),
                        "machine": {"description": machine_description(), "cpu_flags": cpu_flags()},
                        "devices": {d: device_info(d) for d in config.simulate},
                        "started_at": utc_now(), "updated_at": None, "complete": False, "cells": cells}

    def save(self) -> None:
        with self.lock:
            self.results["updated_at"] = utc_now()
            write_results(self.config.out, self.results)

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            done = sum(c["status"] == "done" for c in self.cells)
            failed = sum(c["status"] == "failed" for c in self.cells)
            return done, len(self.running), failed

    def run_cell(self, cell: str, stages: list[str], fps: dict, worker_threads: int) -> dict:
        """Run ``stages`` of one cell in a fresh process; the updated record, or the cell
        marked failed when the process died without writing one."""

        rec = self.by_id[cell]
        if rec["started_at"] is None:
            rec["started_at"] = utc_now()
        work = self.config.out / ".sweep"
        request, result = work / f"{cell}.request.json", work / f"{cell}.result.json"
        result.unlink(missing_ok=True)
        config = dict(self.config.worker_config(), worker_threads=worker_threads)
        write_json_atomic(request, {"record": rec, "stages": stages, "config": config, "fingerprints": fps,
                                    "out_dir": str(self.config.out.resolve())})
        env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
        with open(self.config.out / "logs" / f"{cell}.log", "a", encoding="utf-8") as log:
            log.write(f"--- {utc_now()} stages {', '.join(stages)}\n")
            log.flush()
            proc = subprocess.Popen([sys.executable, "-m", "evit_export.sweep.worker", str(request),
                                     str(result)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env)
            with self.lock:
                self.running[cell] = proc
            rc = proc.wait()
        with self.lock:
            self.running.pop(cell, None)
        if result.exists():
            updated = loads_strict(result.read_text(encoding="utf-8"))
        else:
            updated = json.loads(json.dumps(rec))
            updated.update(status="failed", reason=f"{'+'.join(stages)}: the cell's process died "
                           f"({exit_description(rc)}); see logs/{cell}.log")
        request.unlink(missing_ok=True)
        result.unlink(missing_ok=True)
        return updated

    def record(self, updated: dict, fps: dict) -> dict:
        with self.lock:
            rec = self.by_id[updated["id"]]
            rec.update(updated)
            rec["reason"] = strip_paths(rec.get("reason"), self.config.out)
            if rec["status"] == "failed":
                rec["failed_fingerprint"] = fps["build"]
                rec["finished_at"] = utc_now()
            finish_record(rec)
        self.save()
        return rec

    def stop(self) -> None:
        with self.lock:
            for proc in self.running.values():
                proc.kill()


def progress_line(console):
    """The sweep's progress bar. It fits 80 columns (the width of piped or captured
    output): no "elapsed" label, a compact ETA, the bar takes what is left."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=None),
                    MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(compact=True), console=console, expand=False)


def progress_text(phase: str, done: int, running: int, failed: int) -> str:
    return f"{phase}: {done} done, {running} running, {failed} failed"


def _clean_stale_temporaries(out: Path) -> None:
    """Temporary files a killed run left (atomic writes rename them into place on success)."""
    import shutil

    for folder in (out, out / "artifacts", out / ".sweep"):
        for p in folder.glob(".*.tmp") if folder.is_dir() else ():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    for p in (out / ".sweep").glob("*.json") if (out / ".sweep").is_dir() else ():
        p.unlink(missing_ok=True)


def run_sweep(config: SweepConfig, console=None, executor=None, fleet=None) -> dict:
    """Run (or resume) the sweep; returns the results dict also written to results.json.
    ``executor`` runs the cells (default: ``LocalExecutor``, --jobs processes here; see
    sweep/executors.py); ``fleet`` (sweep/fleet.py) then measures them on real devices."""
    from rich.console import Console

    console = console or Console(stderr=True)
    config = config.validated()
    out = config.out
    executor = executor or LocalExecutor(config.jobs)
    try:
        executor.prepare()  # before --out is touched: a cluster that cannot serve writes nothing
    except BaseException:
        executor.close()
        raise
    if config.fresh:
        start_fresh(out)
    for sub in ("artifacts", "logs", ".sweep"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _clean_stale_temporaries(out)
    earlier = load_results(out) or {}
    previous = {c["id"]: c for c in earlier.get("cells", [])}
    cells = plan_cells(config)
    todo: dict[str, tuple[list[str], dict]] = {}
    for rec in cells:
        if rec["status"] != "skipped":
            fps = fingerprints(config, rec)
            stages = stages_to_run(rec, previous.get(rec["id"]), fps, config)
            rec["inputs"] = cell_inputs(config, rec)
            rec.pop("stale", None)  # in the matrix: run again where its inputs changed
            if stages:
                todo[rec["id"]] = (stages, fps)
                if stages == list(STAGES):
                    rec["started_at"] = None  # a fresh start
    matrix = len(cells)
    cells += keep_earlier_cells(cells, previous, config)
    _say_what_changed(console, earlier, config, cells[matrix:], previous, todo)
    skipped = sum(c["status"] == "skipped" for c in cells[:matrix])
    fresh = sum(stages == list(STAGES) for stages, _ in todo.values())
    console.print(f"sweep: {matrix} cells, {matrix - skipped - len(todo)} kept from the previous run, "
                  f"{len(todo) - fresh} resumed, {fresh} to run, {skipped} skipped; --jobs {config.jobs}; "
                  f"writing {out}")
    run = SweepRun(config, cells)
    run.results["devices"] = {**earlier.get("devices", {}), **run.results["devices"]}
    run.save()
    try:
        with progress_line(console) as progress:
            _run_phases(run, todo, progress, executor)
            if fleet is not None:
                fleet.measure(run, progress.console)
    except KeyboardInterrupt:
        run.stop()
        raise
    finally:
        executor.close()
    for rec in cells:
        finish_record(rec)
    run.results["complete"] = all(c["status"] in ("done", "failed", "skipped") for c in cells)
    run.save()

    write_report(out, run.results)
    return run.results


def _say_what_changed(console, earlier: dict, config: SweepConfig, kept: list[dict], previous: dict,
                      todo: dict) -> None:
    """One line on how this run differs from the earlier one in the same folder, and what
    becomes of the earlier cells."""
    changes = config_changes(earlier.get("config"), config.public())
    if not changes:
        return
    stale = [c["id"] for c in kept if c.get("stale")]
    rerun = [c for c in todo if c in previous and previous[c].get("status") != "skipped"]
    parts = [f"changed since the last sweep in {config.out}: {'; '.join(changes)}"]
    if kept:
        parts.append(f"{len(kept)} earlier cell{'s' if len(kept) != 1 else ''} not in this matrix kept"
                     + (f" ({len(stale)} stale: {', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''})"
                        if stale else ""))
    if rerun:
        parts.append(f"{len(rerun)} earlier cell{'s' if len(rerun) != 1 else ''} with changed inputs run again")
    console.print(". ".join(parts) + ". --fresh starts over.", highlight=False)


def _run_phases(run: SweepRun, todo: dict, progress, executor) -> None:
    parallel = {c: ([s for s in stages if s in BUILD_STAGES], fps) for c, (stages, fps) in todo.items()
                if any(s in BUILD_STAGES for s in stages)}
    measured = [c for c, v in todo.items() if "measure" in v[0]]
    task = progress.add_task("", total=len(parallel) + len(measured))
    phase = ["export+check"]

    def describe() -> None:
        done, running, failed = run.counts()
        progress.update(task, description=progress_text(phase[0], done, running, failed))

    def on_result(updated: dict, fps: dict) -> None:
        rec = run.record(updated, fps)
        if rec["status"] != "pending":
            extra = f": {rec['reason']}" if rec.get("reason") else ""
            progress.console.print(f"  {rec['id']}: {rec['verdict'] or rec['status']}{extra}")
        progress.advance(task)

    describe()
    executor.run_builds(run, parallel, on_result, describe)
    ready = {}
    for cell in measured:
        rec = run.by_id[cell]
        if rec["status"] == "failed" or "measure" in rec["stages"]:  # failed, or no runtime here
            progress.advance(task)
        else:
            ready[cell] = (["measure"], todo[cell][1])
    phase[0] = "latency"
    executor.run_measures(run, ready, on_result, describe)
    phase[0] = "finished"
    describe()
