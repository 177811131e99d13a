"""The sweep's record schema and its two files, ``results.json`` and ``results.csv``.

One record per cell (variant × target × precision). A record is a plain dict so the
worker processes, the JSON file and the report share one shape without a class to
keep in sync; ``new_record`` lists every key. Both files are rewritten atomically
after each cell, so a sweep killed at any moment leaves the last complete state.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import math
from pathlib import Path

from evit_export.core.atomic import write_text_atomic
from evit_export.core.jsonio import dumps_strict, loads_strict

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
SCHEMA_VERSION = 1

# Cell status: "done" (every stage ran; verdict pass/fail), "failed" (a stage raised or
# the worker died; reason says which), "skipped" (the cell makes no sense; reason says why),
# "pending" (not reached yet, or interrupted).
STATUSES = ("done", "failed", "skipped", "pending")
# The stages a cell goes through, in order; each records its own start/finish.
STAGES = ("build", "estimate", "measure")


def cell_id(variant: str, target: str, precision: str) -> str:
    return f"{variant}-{target}-{precision}"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def new_record(variant: str, target: str, precision: str) -> dict:
    """An empty record: every key the schema has, filled as the stages run."""
    return {
        "id": cell_id(variant, target, precision), "variant": variant, "target": target,
        "precision": precision, "precision_label": precision,
        "status": "pending", "verdict": None, "reason": None, "notes": [],
        "started_at": None, "finished_at": None,
        "stages": {},  # stage -> {"started_at", "finished_at", "seconds", "fingerprint"}
        "artifact": None, "sha256": None, "file_size": None,
        "params": None, "macs": None, "img_size": None, "num_classes": None,
        "equivalence": None,  # runtime, max_abs, cosine_min, top1/top5 agreement, tolerance, passed, failures
        "parity": None,  # data, images, top1, reference_top1, delta_top1, agreement, tolerance, passed
        # measured on this machine: runtime, machine, median_ms, p50/p90/p99_ms, load_ms, first_ms,
        # peak_rss_bytes (resident high-water mark the model adds), ...; or {"skipped": why}
        "latency": None,
        # planned from the graph (validation.memory.static_memory): activation arena and weights
        "activation_bytes": None, "weight_bytes": None,
        "estimates": {},  # device -> {estimate_ms, kind "estimate", description, provenance, ...}
        "memory_bound_ops": None, "total_ops": None,
        # share of the runtime's kernel time in memory-bound ops, where it has an op profiler
        "memory_bound_time_share": None,
        "int8": None,  # int8 cells: kept_float, calibration_method, weight_bits (issue 18)
        "node_id": None, "host": None,  # where the cell was built (Ray executor)
        "fleet": {},  # device -> latency measured over SSH (sweep --fleet), or {"kind": "failed", "error"}
    }


def sha256_artifact(path: Path) -> str:
    """sha256 of a file, or of a directory artifact (.mlpackage): every file's relative
    path and bytes, in sorted order, so a changed weight file changes the digest."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f is not path:
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def artifact_size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def load_results(out_dir: Path) -> dict | None:
    """The previous run's results in ``out_dir``; None when there are none or they
    cannot be read (a sweep then starts over rather than trusting a damaged file)."""
    path = Path(out_dir) / RESULTS_JSON
    if not path.is_file():
        return None
    try:
        data = loads_strict(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        return None
    return data


def write_results(out_dir: Path, results: dict) -> None:
    """results.json (everything) and results.csv (one flat row per cell), atomically."""
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / RESULTS_JSON, dumps_strict(results, indent=2) + "\n")
    write_text_atomic(out_dir / RESULTS_CSV, results_csv(results))


def csv_columns(devices: list[str], fleet: list[str] = ()) -> list[str]:
    base = ["id", "variant", "target", "precision", "precision_label", "status", "verdict", "reason",
            "artifact", "sha256", "file_size", "params", "macs", "img_size",
            "eq_runtime", "eq_max_abs", "eq_cosine_min", "eq_cosine_mean", "eq_top1_agreement",
            "eq_top5_agreement", "eq_sqnr_db", "eq_passed", "int8_kept_float",
            "parity_top1", "parity_reference_top1", "parity_delta_top1", "parity_agreement", "parity_passed",
            "latency_median_ms", "latency_p90_ms", "latency_p99_ms", "latency_load_ms", "latency_first_ms",
            "peak_rss_bytes", "activation_bytes", "weight_bytes",
            "latency_runtime", "latency_machine", "latency_kind", "memory_bound_ops", "total_ops",
            "memory_bound_time_share", "node_id", "host", "started_at", "finished_at"]
    for d in devices:
        base += [f"estimate_ms[{d}]", f"estimate_provenance[{d}]"]
    for d in fleet:
        base += [f"fleet_ms[{d}]", f"fleet_error[{d}]"]
    return base


def csv_row(rec: dict, devices: list[str], fleet: list[str] = ()) -> dict:
    eq = rec.get("equivalence") or {}
    par = rec.get("parity") or {}
    lat = rec.get("latency") or {}
    row = {k: rec.get(k) for k in ("id", "variant", "target", "precision", "precision_label", "status",
                                   "verdict", "reason", "artifact", "sha256", "file_size", "params", "macs",
                                   "img_size", "activation_bytes", "weight_bytes", "memory_bound_ops", "total_ops",
                                   "memory_bound_time_share", "node_id", "host", "started_at", "finished_at")}
    row.update({"eq_runtime": eq.get("runtime"), "eq_max_abs": eq.get("max_abs"),
                "eq_cosine_min": eq.get("cosine_min"), "eq_cosine_mean": eq.get("cosine_mean"),
                "eq_top1_agreement": eq.get("top1_agreement"), "eq_top5_agreement": eq.get("top5_agreement"),
                "eq_sqnr_db": eq.get("sqnr_db"), "eq_passed": eq.get("passed"),
                "int8_kept_float": ",".join((rec.get("int8") or {}).get("kept_float") or []) or None,
                "parity_top1": par.get("top1"), "parity_reference_top1": par.get("reference_top1"),
                "parity_delta_top1": par.get("delta_top1"), "parity_agreement": par.get("agreement"),
                "parity_passed": par.get("passed"),
                "latency_median_ms": lat.get("median_ms"), "latency_p90_ms": lat.get("p90_ms"),
                "latency_p99_ms": lat.get("p99_ms"), "latency_load_ms": lat.get("load_ms"),
                "latency_first_ms": lat.get("first_ms"), "peak_rss_bytes": lat.get("peak_rss_bytes"),
                "latency_runtime": lat.get("runtime"), "latency_machine": lat.get("machine"),
                "latency_kind": lat.get("kind") or lat.get("skipped")})
    for d in devices:
        est = (rec.get("estimates") or {}).get(d) or {}
        row[f"estimate_ms[{d}]"] = est.get("estimate_ms")
        row[f"estimate_provenance[{d}]"] = est.get("provenance")
    for d in fleet:
        measured = (rec.get("fleet") or {}).get(d) or {}
        row[f"fleet_ms[{d}]"] = measured.get("median_ms")
        row[f"fleet_error[{d}]"] = measured.get("error")
    return row


def results_csv(results: dict) -> str:
    devices = list(results.get("config", {}).get("simulate") or [])
    fleet = list(results.get("fleet") or {})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_columns(devices, fleet), lineterminator="\n")
    writer.writeheader()
    for rec in results.get("cells", []):
        # Empty cell for "no value" (never the strings None/nan): what spreadsheets expect.
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v)
                         for k, v in csv_row(rec, devices, fleet).items()})
    return buf.getvalue()
