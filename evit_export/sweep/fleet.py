"""``sweep --fleet fleet.toml``: every finished cell measured on each real device of a
fleet that runs its format, over SSH with ``bench --remote``'s machinery
(``validation.latency.remote``: the artifact and a self-contained script copied to the
device, run with the device's own Python and runtime, host keys checked against
known_hosts exactly as ``bench --remote`` does).

Devices work concurrently, each one cell at a time (two timings on one device at once
would measure each other). A device that cannot be reached, refuses the key or lacks
the runtime gives failed figures with the reason; the sweep goes on. Figures are kept
on a re-run while the cell's artifact, the device's address, Python and threads are
unchanged; failed ones are tried again.

fleet.toml::

    [[device]]
    name = "pi5"                      # names the device in results.json and the report
    host = "pi@192.168.1.20:22"       # [USER@]HOST[:PORT]
    identity = "~/.ssh/id_ed25519"    # private key; default: ssh-agent / ~/.ssh keys
    python = "/home/pi/venv/bin/python3"
    formats = ["onnx", "tflite"]      # the targets whose runtime the device has
    threads = 4                       # optional, default 1
    known_hosts = "~/.ssh/known_hosts"  # optional
    accept_new_host_key = false       # optional: true records an unknown host's key once
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.sweep.results import utc_now
from evit_export.sweep.run import fingerprints
from evit_export.targets import get_target, target_names
from evit_export.validation.latency.remote import RemoteHost, bench_remote, connect

_KEYS = {"name", "host", "identity", "python", "formats", "threads", "known_hosts", "accept_new_host_key",
         "iterations"}


@dataclass(frozen=True)
class FleetDevice:
    name: str
    host: RemoteHost
    formats: tuple[str, ...]
    python: str = "python3"
    identity: Path | None = None
    threads: int = 1
    iterations: int = 30
    known_hosts: Path | None = None
    accept_new_host_key: bool = False

    def public(self) -> dict:
        """What results.json records (no key or known_hosts path: those are this machine's)."""
        return {"host": str(self.host), "python": self.python, "formats": list(self.formats),
                "threads": self.threads, "iterations": self.iterations}

    def runs(self, target: str) -> bool:
        return target in self.formats and get_target(target).remote_bench_source() is not None


def _device(entry: dict, where: str) -> FleetDevice:
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}: use {', '.join(sorted(_KEYS))}")
    for key in ("name", "host", "formats"):
        if not entry.get(key):
            raise UserError(f"{where}: give {key} = ... (see sweep --help for a fleet.toml example)")
    formats = entry["formats"]
    if isinstance(formats, str) or not all(isinstance(f, str) for f in formats):
        raise UserError(f"{where}: formats must be a list of target names, e.g. formats = [\"onnx\"]")
    for f in formats:
        if f not in target_names():
            raise UserError(f"{where}: unknown format {f!r}: choose from {', '.join(target_names())}")
    for key in ("threads", "iterations"):
        if key in entry and (not isinstance(entry[key], int) or entry[key] < 1):
            raise UserError(f"{where}: {key} must be a whole number of at least 1")

    def path(key):
        return Path(entry[key]).expanduser() if entry.get(key) else None

    identity = path("identity")
    if identity is not None and not identity.is_file():
        raise UserError(f"{where}: identity {entry['identity']} does not exist: give the private key file")
    return FleetDevice(name=str(entry["name"]), host=RemoteHost.parse(str(entry["host"])),
                       formats=tuple(formats), python=str(entry.get("python", "python3")), identity=identity,
                       threads=entry.get("threads", 1), iterations=entry.get("iterations", 30),
                       known_hosts=path("known_hosts"), accept_new_host_key=bool(entry.get("accept_new_host_key")))


def load_fleet(path: Path) -> list[FleetDevice]:
    """The devices of a fleet.toml; one-line UserError naming the problem otherwise."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--fleet {path} does not exist: give a fleet.toml with [[device]] tables")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"--fleet {path.name} is not valid TOML: {str(e).splitlines()[0]}") from None
    entries = data.get("device")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"--fleet {path.name} lists no devices: add [[device]] tables (name, host, formats)")
    devices = [_device(e, f"--fleet {path.name}, device {i + 1}") for i, e in enumerate(entries)]
    names = [d.name for d in devices]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"--fleet {path.name}: device name {twice[0]!r} is used twice: names must differ")
    return devices


def _figure_fingerprint(measure_fp: str, device: FleetDevice) -> str:
    text = json.dumps([measure_fp, device.public()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Fleet:
    """The fleet's devices and the measuring phase of a sweep."""

    def __init__(self, devices: list[FleetDevice]):
        self.devices = devices

    def describe(self) -> dict:
        return {d.name: d.public() for d in self.devices}

    def plan(self, run) -> dict[str, list[tuple[str, str]]]:
        """Per device, the (cell, fingerprint) pairs it still has to measure."""
        todo: dict[str, list[tuple[str, str]]] = {d.name: [] for d in self.devices}
        for rec in run.cells:
            if rec["status"] != "done" or not rec.get("artifact"):
                continue
            figures = rec.setdefault("fleet", {})
            measure_fp = fingerprints(run.config, rec)["measure"]
            for device in self.devices:
                if not device.runs(rec["target"]):
                    continue
                fp = _figure_fingerprint(measure_fp, device)
                kept = figures.get(device.name) or {}
                if kept.get("fingerprint") != fp or kept.get("median_ms") is None:
                    todo[device.name].append((rec["id"], fp))
        return todo

    def measure(self, run, console=None) -> None:
        """Measure every planned (device, cell) pair: devices in parallel threads, each
        device's cells one after another. Ctrl-C stops after the figures being taken."""
        run.results["fleet"] = self.describe()
        todo = self.plan(run)
        total = sum(len(v) for v in todo.values())
        if console is not None:
            console.print(f"fleet: {total} measurements on {len(self.devices)} devices")
        stop = threading.Event()
        threads = [threading.Thread(target=self._device_loop, args=(run, d, todo[d.name], stop, console),
                                    name=f"fleet {d.name}", daemon=True) for d in self.devices if todo[d.name]]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
        except BaseException:
            stop.set()  # each device finishes the figure it is taking; the rest stay unmeasured
            raise
        run.save()

    def _device_loop(self, run, device: FleetDevice, cells: list[tuple[str, str]], stop, console) -> None:
        reachable = self._probe(device)
        for cell, fp in cells:
            if stop.is_set():
                return
            rec = run.by_id[cell]
            t0, started = time.perf_counter(), utc_now()
            if reachable is not None:
                figure = {"kind": "failed", "error": reachable}
            else:
                try:
                    lat = bench_remote(run.config.out / rec["artifact"], device.host, identity=device.identity,
                                       remote_python=device.python, threads=device.threads,
                                       iterations=device.iterations, accept_new_host_key=device.accept_new_host_key,
                                       known_hosts=device.known_hosts)
                    figure = lat.to_dict()
                except UserError as e:
                    figure = {"kind": "failed", "error": str(e)}
            figure.update(device=device.name, fingerprint=fp, started_at=started, finished_at=utc_now(),
                          seconds=round(time.perf_counter() - t0, 3))
            with run.lock:
                rec.setdefault("fleet", {})[device.name] = figure
            run.save()
            if console is not None:
                said = f"{figure['median_ms']:.3f} ms" if figure.get("median_ms") is not None else figure["error"]
                console.print(f"  {cell} on {device.name}: {said}")

    @staticmethod
    def _probe(device: FleetDevice) -> str | None:
        """None when the device accepts a connection (host key and login checked as
        bench --remote does); else why not, which then stands for each of its figures
        instead of one SSH attempt (and time-out) per cell."""
        known = Path(device.known_hosts or Path.home() / ".ssh" / "known_hosts")
        try:
            connect(device.host, device.identity, known, device.accept_new_host_key).close()
        except UserError as e:
            return str(e)
        return None
