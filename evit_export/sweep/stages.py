"""The stages of one sweep cell (a variant × target × precision), as a library: the
worker process (``sweep/worker.py``) runs them for the sweep, and the demo calls them
directly.

  build     export → check against PyTorch → parity on --data → graph inspection
  estimate  simulated latency on each requested device profile the target runs on
  measure   latency on this machine's runtime, one cell at a time (run by the sweep
            only when no other cell is running), plus the runtime's op-time profile
            where it has one
"""
from __future__ import annotations

import time
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.data import DIGITS_LABELS
from evit_export.models.profile import count_macs, count_params
from evit_export.models.reference import deploy_for_export
from evit_export.sweep.results import artifact_size, sha256_artifact, utc_now
from evit_export.targets import get_target, RunnerOptions
from evit_export.validation.check import check_artifact
from evit_export.validation.latency import fit_refusal, reported
from evit_export.validation.latency.measure import bench_in_fresh_process
from evit_export.validation.latency.profiles import all_profiles, resolve_profile
from evit_export.validation.latency.simulate import estimate, model_features
from evit_export.validation.parity import check_parity

CHECKER_NOT_DEVICE = ("not measured: {runtime} is a numerical checker, not a device runtime "
                      "(--simulate gives device estimates)")


# --- the calls into targets and validation, each in one place ---------------------------

def cell_options(target, precision: str, config: dict):
    """The target's own export options for a sweep precision; raises
    PrecisionNotApplicable (a UserError) for a cell that makes no sense."""
    int8 = precision == "int8"
    return target.options_type.for_precision(
        precision, calibration_data=config.get("calibration_data") if int8 else None,
        calibration_size=config.get("calibration_size") or 200, batch=1)


def known_devices() -> list[str]:
    """Names of the device profiles ``--simulate`` accepts."""

    return sorted(all_profiles())


def _profile(device: str):

    return resolve_profile(device)


def check_device(device: str) -> None:
    """A one-line error (resolve_profile's) for a device profile ``--simulate`` cannot find."""
    _profile(device)


def device_info(device: str) -> dict:
    """What a device profile is and rests on, for results.json and the report."""
    profile = _profile(device)
    return {"description": profile.description, "runtime": profile.runtime, "formats": profile.formats,
            "precisions": profile.precisions, "provenance": profile.provenance(), "error": profile.error_summary()}


def device_applies(device: str, target: str, precision: str) -> bool:
    """Whether a device profile describes a runtime that runs this cell's artifact."""

    return fit_refusal(_profile(device), target, precision, "") is None  # the rule simulate and bench follow


def estimate_on_device(deployed, spec, device: str) -> dict:
    """Simulated latency of the deploy graph on ``device``, always labelled an estimate,
    with the profile's provenance and validation error."""

    profile = _profile(device)
    est = reported(estimate(model_features(deployed, spec.img_size, spec.batch or 1), profile,
                            model=spec.variant, img_size=spec.img_size, batch=spec.batch or 1), profile).to_dict()
    return {"estimate_ms": est["estimate_ms"], "significant_figures": est["significant_figures"], "kind": "estimate",
            "device_class": est.get("device_class"),
            "description": profile.description, "runtime": profile.runtime, "provenance": est.get("provenance"),
            "validation": est.get("validation"), "error": profile.error_summary()}


# --- stages ------------------------------------------------------------------------------

class CellContext:
    """What the stages of one cell share: config, paths, the deploy model (built once)."""

    def __init__(self, record: dict, config: dict, out_dir: Path, deployed: tuple | None = None):
        self.record, self.config, self.out_dir = record, config, Path(out_dir)
        self._deployed = deployed  # (deploy model, spec) when the caller has it already

    @property
    def checkpoint(self):
        return (self.config.get("weights") or {}).get(self.record["variant"])

    def deployed(self):
        if self._deployed is None:

            self._deployed = deploy_for_export(self.record["variant"], self.checkpoint,
                                               self.config.get("num_classes"), self.config.get("img_size"),
                                               seed=self.config.get("seed", 0))
        return self._deployed

    def artifact_path(self) -> Path:
        return self.out_dir / self.record["artifact"]


def stage_build(ctx: CellContext) -> list[str]:

    rec = ctx.record
    target = get_target(rec["target"])
    options = cell_options(target, rec["precision"], ctx.config)
    rec["precision_label"] = options.precision_label()
    deployed, spec = ctx.deployed()
    rec["artifact"] = f"artifacts/{rec['id']}{target.suffixes[0]}"
    path = ctx.artifact_path()
    art = target.export(deployed, spec, path, options)
    int8 = (art.info or {}).get("int8") or {}
    if int8:  # what the int8 export kept in float and how it calibrated (issue 18)
        rec["int8"] = {"kept_float": list(int8.get("kept_float") or []),
                       "calibration_method": int8.get("calibration_method"), "weight_bits": int8.get("weight_bits")}
    record_artifact(ctx, target, path)
    images = _int8_check_images(ctx) if target.precision_family(target.read_spec(path)) == "int8" else None
    rec["equivalence"] = equivalence_fields(check_artifact(path, checkpoint=ctx.checkpoint, images=images), ctx)
    if ctx.config.get("data"):

        report = check_parity([path], data=ctx.config["data"], checkpoint=ctx.checkpoint)
        rec["parity"] = parity_fields(report, report.artifacts[0], Path(ctx.config["data"]).name)
    return _latency_not_measurable(ctx, target, path)


def record_artifact(ctx: CellContext, target, path: Path) -> None:
    """File, model and graph figures of an exported artifact (sweep and demo)."""

    deployed, spec = ctx.deployed()
    graph = target.inspect(path)
    ctx.record.update(sha256=sha256_artifact(path), file_size=artifact_size(path), img_size=spec.img_size,
                      num_classes=spec.num_classes, params=count_params(deployed),
                      macs=count_macs(deployed, spec.img_size), memory_bound_ops=graph.memory_bound_ops,
                      total_ops=graph.total_ops)


def equivalence_fields(report, ctx: CellContext) -> dict:
    data = report.to_dict()
    keep = ("runtime", "precision", "n", "max_abs", "mean_abs", "max_rel", "cosine_min", "cosine_mean",
            "top1_agreement", "top5_agreement", "sqnr_db", "tolerance", "passed", "failures", "notes")
    out = {k: data.get(k) for k in keep}
    out["inputs"] = _no_paths(data.get("inputs", ""), ctx)
    return out


def parity_fields(report, row, data_name: str) -> dict:
    return {"data": data_name, "images": report.images, "top1": row.top1, "top5": row.top5,
            "reference_top1": report.reference.top1, "delta_top1": row.delta_top1, "agreement": row.agreement,
            "tolerance": row.tolerance, "passed": row.passed, "runtime": row.runtime}


def _latency_not_measurable(ctx: CellContext, target, path: Path) -> list[str]:
    """Decide here, in parallel with other cells, whether this machine has a device
    runtime for the artifact; when it has none (e.g. CoreML's MIL interpreter on Linux)
    the measure stage is finished at once and the sweep's serial timing phase skips it."""

    with target.open(path, options=RunnerOptions(threads=1)) as runner:
        if runner.deployment_runtime:
            return []
        ctx.record["latency"] = {"skipped": CHECKER_NOT_DEVICE.format(runtime=runner.name), "runtime": runner.name}
    return ["measure"]


def _int8_check_images(ctx: CellContext):
    """Real images to judge an int8 artifact on: --data, else (for a model that is not a
    digits model) the calibration folder, said so in the record; None = the check's own
    default (the held-out digits)."""

    _, spec = ctx.deployed()
    if ctx.config.get("data"):
        return ctx.config["data"]
    cal = ctx.config.get("calibration_data")
    if list(spec.labels) != DIGITS_LABELS and cal and cal != "random" and Path(cal).is_dir():
        # the check leaves the images that calibrated the model out by itself (their digests
        # are in the sidecar) and says "in-sample" in its notes when nothing else is left
        ctx.record["notes"].append("int8 equivalence judged on the calibration folder's held-out images "
                                   "(no --data given)")
        return cal
    return None


# Planned memory depends on the architecture, size and precision, never on weight values:
# cells that share them (a sweep's formats of one variant) plan once per process.
_PLANNED: dict[tuple, dict] = {}


def planned_cell_memory(deployed, spec, precision: str) -> dict:
    """Activation arena and weight bytes the deploy graph plans at ``precision`` (the
    figures `inspect` and `simulate` print), for phones the sweep cannot run on."""
    from evit_export.validation.memory import memory_of_model

    key = (spec.variant, spec.img_size, spec.batch or 1, spec.num_classes, precision)
    if key not in _PLANNED:
        _PLANNED[key] = memory_of_model(deployed, spec.img_size, spec.batch or 1, precision)
    return _PLANNED[key]


def stage_estimate(ctx: CellContext) -> None:
    deployed, spec = ctx.deployed()
    rec = ctx.record
    target = get_target(rec["target"])
    planned = planned_cell_memory(deployed, spec, target.precision_family(target.read_spec(ctx.artifact_path())))
    rec["activation_bytes"], rec["weight_bytes"] = planned["activation_bytes"], planned["weight_bytes"]
    rec["estimates"] = {}
    for device in ctx.config.get("simulate") or []:
        if device_applies(device, rec["target"], rec["precision"]):
            rec["estimates"][device] = estimate_on_device(deployed, spec, device)


def stage_measure(ctx: CellContext) -> None:

    rec = ctx.record
    target = get_target(rec["target"])
    path = ctx.artifact_path()
    threads = ctx.config.get("threads") or 1
    spec = target.read_spec(path)
    with target.open(path, spec=spec, options=RunnerOptions(threads=threads)) as runner:
        deployment, runtime = runner.deployment_runtime, runner.name
    if not deployment:
        rec["latency"] = {"skipped": CHECKER_NOT_DEVICE.format(runtime=runtime), "runtime": runtime}
    else:
        # A fresh process per artifact: load time, first call and the resident high-water
        # mark are only what the model costs in a process that has loaded nothing else.
        lat = bench_in_fresh_process(path, threads=threads, iterations=30, min_seconds=0.5)
        rec["latency"] = lat.to_dict()
    shares = target.op_time_profile(path, threads=threads)
    if shares:  # None where the runtime has no op profiler
        rec["memory_bound_time_share"] = round(sum(v for op, v in shares.items() if target.is_memory_bound(op)), 4)


STAGE_FUNCTIONS = {"build": stage_build, "estimate": stage_estimate, "measure": stage_measure}


def _no_paths(text: str, ctx: CellContext) -> str:
    """Folder paths the user gave, shortened to their names: records carry no machine paths."""
    for key in ("data", "calibration_data"):
        value = ctx.config.get(key)
        if value and value != "random":
            text = text.replace(str(value), Path(value).name)
    return text


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def run_stages(record: dict, stages: list[str], config: dict, out_dir: Path, fingerprints: dict) -> dict:
    """Run ``stages`` on ``record`` (updated in place and returned); the first stage that
    raises ends the cell as failed with a one-line reason."""

    ctx = CellContext(record, config, out_dir)
    for stage in stages:
        t0, started = time.perf_counter(), utc_now()
        if stage in record["stages"]:  # finished by an earlier stage
            continue
        try:
            also_done = STAGE_FUNCTIONS[stage](ctx) or []
        except Exception as e:  # one failing cell must never stop the sweep: record why
            record["status"], record["reason"] = "failed", f"{stage}: {one_line(e)}"
            return record
        for name in [stage, *also_done]:
            record["stages"][name] = {"started_at": started, "finished_at": utc_now(),
                                      "seconds": round(time.perf_counter() - t0, 3) if name == stage else 0.0,
                                      "fingerprint": fingerprints[name]}
    return record
