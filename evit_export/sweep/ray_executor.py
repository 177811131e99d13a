"""The sweep on a Ray cluster (``sweep --executor ray``; extra ``[cluster]``).

Each cell's build+estimate stages are one Ray task asking for ``cell_threads`` CPUs; all
pending cells are submitted at once and Ray's scheduler places them. On its node a task
runs the same worker process as a local sweep (``python -m evit_export.sweep.worker``:
a native crash ends that cell only, torch and TensorFlow load in a safe order) in a
temporary folder, and returns the record, the cell's log and the artifact as tar bytes:
no file system is shared. The driver unpacks them into ``--out`` and records the cell
as soon as it arrives, so a node dying later loses nothing finished.

The sweep's inputs (checkpoints, --data, --calibration-data folders) travel the same
way: one tarball put into Ray's object store, unpacked once per node.

Faults: a task whose node or worker dies is retried elsewhere by Ray (``max_retries``,
bounded); past that the cell is failed with Ray's reason. Ctrl-C cancels every task
still pending or running (their cell processes die with their Ray worker) and keeps
what finished.

Latency is measured where ``measure_on`` says: ``driver`` (this machine, one cell at a
time, as a local sweep), or the name of a custom Ray resource (``ray start --resources
'{"bench": 1}'``): each measure task asks for one unit of it, so a node holding one unit
measures one cell at a time, with the artifact shipped to it.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from evit_export.core.atomic import scratch_dir
from evit_export.core.errors import UserError
from evit_export.core.jsonio import loads_strict, write_json_atomic
from evit_export.core.paths import strip_paths
from evit_export.sweep.executors import exit_description
from evit_export.sweep.results import utc_now
from evit_export.sweep.worker import PARENT_ENV

DRIVER = "driver"
_INPUT_KEYS = ("data", "calibration_data")


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray on this machine and on every node: "
                        "pip install 'evit-export[cluster]'") from None
    return ray


# --- on a node ---------------------------------------------------------------------------

def _tar_bytes(root: Path, names: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names:
            tar.add(str(root / name), arcname=name)
    return buf.getvalue()


def _untar(blob: bytes, into: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(into, filter="data")  # "data": no absolute paths, links or devices


def _node_inputs(bundle: bytes | None, digest: str | None) -> Path | None:
    """The sweep's inputs unpacked on this node, once per node (later tasks reuse them)."""
    if not bundle:
        return None
    root = Path(tempfile.gettempdir()) / "evit-sweep-inputs" / digest
    if not root.is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=root.parent))
        _untar(bundle, partial)
        try:
            partial.rename(root)
        except OSError:  # another task of this sweep on this node was first
            shutil.rmtree(partial, ignore_errors=True)
    return root


def _node_config(config: dict, inputs: Path | None, names: dict) -> dict:
    """The worker config with the driver's input paths replaced by this node's copies."""
    config = dict(config)
    if inputs is None:
        return config
    config["weights"] = {v: (str(inputs / names[ck]) if ck in names else ck)
                         for v, ck in (config.get("weights") or {}).items()}
    for key in _INPUT_KEYS:
        if config.get(key) in names:
            config[key] = str(inputs / names[config[key]])
    return config


def run_cell_on_node(request: dict, bundle: bytes | None, bundle_digest: str | None, input_names: dict,
                     artifact: bytes | None) -> dict:
    """One Ray task: ``request['stages']`` of one cell in a worker process on this node.
    Returns the updated record, the worker's log, the artifact (tar bytes, when the cell
    built one and ``artifact`` was not given) and where it ran."""
    import ray

    inputs = _node_inputs(bundle, bundle_digest)
    with scratch_dir("evit-sweep-cell-") as work:
        out = work / "out"
        (out / "artifacts").mkdir(parents=True)
        if artifact:
            _untar(artifact, out)
        record = request["record"]
        req, res, log = work / "request.json", work / "result.json", work / "cell.log"
        write_json_atomic(req, {"record": record, "stages": request["stages"],
                                "config": _node_config(request["config"], inputs, input_names),
                                "fingerprints": request["fingerprints"], "out_dir": str(out)})
        env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
        with open(log, "w", encoding="utf-8") as fh:
            rc = subprocess.run([sys.executable, "-m", "evit_export.sweep.worker", str(req), str(res)],
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                check=False).returncode
        if res.exists():
            updated = loads_strict(res.read_text(encoding="utf-8"))
        else:
            updated = dict(record, status="failed", reason=f"{'+'.join(request['stages'])}: the cell's process "
                           f"died ({exit_description(rc)}); see logs/{record['id']}.log")
        updated["reason"] = strip_paths(updated.get("reason"), out)
        built = None
        if not artifact and updated.get("artifact") and (out / updated["artifact"]).exists():
            built = _tar_bytes(out, [updated["artifact"]])
        context = ray.get_runtime_context()
        return {"record": updated, "artifact_tar": built, "log": strip_paths(log.read_text(errors="replace"), out),
                "node_id": context.get_node_id(), "host": socket.gethostname()}


# --- on the driver -----------------------------------------------------------------------

def _input_bundle(config) -> tuple[bytes | None, str | None, dict]:
    """(tar bytes, digest, driver path -> name inside the tar) of every local input file
    or folder the cells read; nothing when the sweep reads none."""
    paths = [ck for ck in config.weights.values() if "://" not in ck]
    paths += [getattr(config, key) for key in _INPUT_KEYS if getattr(config, key) not in (None, "random")]
    if not paths:
        return None, None, {}
    names = {p: f"{i}/{Path(p).name}" for i, p in enumerate(dict.fromkeys(paths))}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, name in names.items():
            tar.add(path, arcname=name)
    blob = buf.getvalue()
    return blob, hashlib.sha256(blob).hexdigest()[:16], names


class RayExecutor:
    """Cells as Ray tasks on the cluster at ``address`` (None: a Ray instance started
    here for this sweep; "auto": the cluster this machine belongs to)."""

    name = "ray"

    def __init__(self, address: str | None = None, cell_threads: int = 1, measure_on: str = DRIVER,
                 max_retries: int = 2):
        if cell_threads < 1:
            raise UserError(f"--cell-threads {cell_threads} must be at least 1")
        if max_retries < 0:
            raise UserError(f"--max-retries {max_retries} must be 0 or more")
        self.address, self.cell_threads, self.measure_on = address, cell_threads, measure_on or DRIVER
        self.max_retries = max_retries
        _check_reachable(address)  # before any work of the sweep, not at the first cell
        self._remote, self._connected = None, False
        self._inputs = None
        self.nodes: dict[str, str] = {}

    def prepare(self) -> None:
        """Connect (or start a local Ray) and check the measure resource exists."""
        if self._connected:
            return
        ray = _ray()
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=True, logging_level="warning")
        except ConnectionError as e:
            raise UserError(f"cannot reach the Ray cluster at {self.address}: {str(e).splitlines()[0]} "
                            "(start it with `ray start --head`, or check --ray-address)") from None
        if self.measure_on != DRIVER and not ray.cluster_resources().get(self.measure_on):
            have = sorted(k for k in ray.cluster_resources() if k not in ("CPU", "GPU", "memory",
                                                                        "object_store_memory")
                          and not k.startswith("node:"))
            raise UserError(f"--measure-on {self.measure_on}: no node of the cluster has that resource "
                            f"(start one with ray start --resources '{{\"{self.measure_on}\": 1}}'; "
                            f"custom resources now: {', '.join(have) or 'none'})")
        self.nodes = {n["NodeID"]: n.get("NodeManagerHostname") or n.get("NodeManagerAddress", "?")
                      for n in ray.nodes() if n.get("Alive")}
        self._connected = True

    def start(self, run) -> None:
        """Connect (``prepare``), then ship the sweep's inputs to the cluster once."""
        if self._remote is not None:
            return
        self.prepare()
        ray = _ray()
        self._remote = ray.remote(run_cell_on_node)
        blob, digest, names = _input_bundle(run.config)
        self._inputs = (ray.put(blob) if blob else None, digest, names)

    def describe(self) -> dict:
        return {"kind": self.name, "address": self.address or "local", "cell_threads": self.cell_threads,
                "measure_on": self.measure_on, "max_retries": self.max_retries, "nodes_at_start": len(self.nodes)}

    def close(self) -> None:
        """Disconnect (a Ray started here for this sweep stops with it)."""
        if self._connected:
            _ray().shutdown()
            self._remote, self._connected = None, False

    def _submit(self, run, cell: str, stages: list[str], fps: dict, threads: int, resources: dict | None,
                artifact_ref=None):
        rec = run.by_id[cell]
        if rec["started_at"] is None:
            rec["started_at"] = utc_now()
        request = {"record": rec, "stages": stages, "fingerprints": fps,
                   "config": dict(run.config.worker_config(), worker_threads=threads)}
        bundle, digest, names = self._inputs
        return self._remote.options(num_cpus=threads, resources=resources or None, max_retries=self.max_retries,
                                    retry_exceptions=False, name=f"evit-sweep {cell} {'+'.join(stages)}"
                                    ).remote(request, bundle, digest, names, artifact_ref)

    def run_builds(self, run, cells, on_result, tick) -> None:
        if not cells:  # everything kept from the previous run: no cluster needed
            return
        self.start(run)
        run.results["executor"] = self.describe()
        refs = {self._submit(run, cell, stages, fps, self.cell_threads, None): (cell, stages, fps)
                for cell, (stages, fps) in cells.items()}
        self._collect(run, refs, on_result, tick)

    def run_measures(self, run, cells, on_result, tick) -> None:
        if self.measure_on == DRIVER:
            from evit_export.sweep.executors import LocalExecutor

            return LocalExecutor().run_measures(run, cells, on_result, tick)
        if not cells:
            return
        self.start(run)
        ray = _ray()
        refs = {}
        for cell, (stages, fps) in cells.items():
            artifact = ray.put(_tar_bytes(run.config.out, [run.by_id[cell]["artifact"]]))
            refs[self._submit(run, cell, stages, fps, run.config.threads, {self.measure_on: 1},
                              artifact)] = (cell, stages, fps)
        self._collect(run, refs, on_result, tick)

    def _collect(self, run, refs: dict, on_result, tick) -> None:
        """Record each task's cell as it finishes; Ctrl-C cancels the rest."""
        ray = _ray()
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                for ref in ready:
                    cell, stages, fps = refs[ref]
                    on_result(self._receive(run, ref, cell, stages), fps)
                tick()
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def _receive(self, run, ref, cell: str, stages: list[str]) -> dict:
        """The finished task's record with its artifact and log written under ``--out``;
        the cell failed with Ray's reason when the task could not finish."""
        ray = _ray()
        out = run.config.out
        try:
            answer = ray.get(ref)
        except ray.exceptions.RayError as e:
            updated = dict(run.by_id[cell], status="failed")
            updated["reason"] = (f"{'+'.join(stages)}: the Ray task failed after up to {self.max_retries} "
                                 f"retries ({_ray_reason(e)})")
            return updated
        updated = answer["record"]
        if answer["artifact_tar"]:
            _publish_artifact(out, updated["artifact"], answer["artifact_tar"])
        with open(out / "logs" / f"{cell}.log", "a", encoding="utf-8") as log:
            log.write(f"--- {utc_now()} stages {', '.join(stages)} on Ray node {answer['node_id']} "
                      f"({answer['host']})\n{answer['log']}")
        where = "measure_node" if "measure" in stages and "build" not in stages else "node"
        updated[f"{where}_id"], updated["host" if where == "node" else "measure_host"] = \
            answer["node_id"], answer["host"]
        return updated


def _check_reachable(address: str | None) -> None:
    """A one-line error at once for a HOST:PORT nobody listens on (Ray itself retries
    for minutes); "auto" and None are Ray's to resolve."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r} is not HOST:PORT (the head's port, 6379 by default) or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"cannot reach the Ray cluster at {address}: {e.strerror or e} (start it with "
                        "`ray start --head`, or check --ray-address)") from None


def _publish_artifact(out: Path, name: str, blob: bytes) -> None:
    """Unpack a cell's artifact into a scratch folder inside ``--out`` and rename it into
    place: a reader never sees half an artifact (it may be a folder, e.g. .mlpackage)."""
    dest = out / name
    # ".*.tmp" in artifacts/: what the sweep removes as a killed run's leftovers.
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=out / "artifacts"))
    try:
        _untar(blob, scratch)
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(scratch / name, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _ray_reason(exc: BaseException) -> str:
    """One line from Ray's (often multi-paragraph) error."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}"[:300]
