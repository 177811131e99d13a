"""SIGKILL and full disks, with real processes.

For each workload (ONNX export, TFLite export, package, training) a clean run is timed
first; then the same command is killed with SIGKILL at points spread over that
duration, all into one output folder that already holds an artifact. After every
kill the artifact under the final name is either the old one, byte for byte, or the
complete new one (exports are deterministic: the clean run's bytes); nothing else
appears under a final name. A last clean run must finish and leave no temporary file
behind, in the output folder or in TMPDIR (what killed runs left is swept). A killed
training run resumes from its last completed epoch.

Full disk: the command runs in a child with RLIMIT_FSIZE and SIGXFSZ ignored, so every
write past the limit fails with EFBIG: exit 2, one line, old artifact intact, no
temporary file left.

Default: 5 kill points in all (ONNX 1, TFLite 1, package 1, training 2); ``-m slow``:
20 per workload.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FSIZE_WRAPPER = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # inherited by exec'd workers too
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from evit_export.cli import main
main(sys.argv[2:])
"""


def _env(tmpdir: Path) -> dict:
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONFAULTHANDLER", None)
    return env


def _cli(args, tmpdir: Path, cwd: Path, timeout=900) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "evit_export", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=_env(tmpdir), cwd=cwd, check=False)
    return proc, time.monotonic() - start


def _ok(args, tmpdir, cwd) -> float:
    proc, seconds = _cli(args, tmpdir, cwd)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return seconds


def _kill_at(args, delay: float, tmpdir: Path, cwd: Path) -> int | None:
    """Start the command, SIGKILL the main process after ``delay`` s (as the OOM killer
    or ``kill -9`` would: its workers are not signalled); return its exit code if it
    finished first."""
    proc = subprocess.Popen([sys.executable, "-m", "evit_export", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env(tmpdir), cwd=cwd)
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None


def _scratch_left(tmpdir: Path) -> list[str]:
    """What is left in TMPDIR, less the caches every run reuses: ``.ses`` (onnxruntime's
    session-id file) and ``torchinductor_<user>`` (torch's compile cache)."""
    return sorted(p.name for p in tmpdir.iterdir() if p.name != ".ses" and not p.name.startswith("torchinductor_"))


def _kill_points(seconds: float, count: int) -> list[float]:
    """``count`` times spread evenly over a clean run's duration."""
    return [seconds * (i + 0.5) / count for i in range(count)]


def _tree_bytes(path: Path) -> dict[str, bytes] | bytes | None:
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _temps(folder: Path, name: str) -> list[str]:
    """Entries that are not final outputs: ``.NAME.*`` beside the artifact."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


def _wait_for_orphans(seconds: float = 2.0) -> None:
    """A worker of the killed process must die with it; give it a moment before the
    output folder is read."""
    time.sleep(seconds)


def _start(args, tmpdir: Path, cwd: Path):
    return subprocess.Popen([sys.executable, "-m", "evit_export", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(tmpdir), cwd=cwd), time.monotonic()


def _finish(started) -> float:
    proc, t0 = started
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"{proc.args}: exit {proc.returncode}\n{err[-3000:]}"
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two small models (M0, 64 px, 10 classes, seeds 0 and 1); the seed-1 ONNX plays the
    existing artifact; clean runs of every killed command give the reference outputs
    ("new") and the durations the kill points are spread over."""
    d = tmp_path_factory.mktemp("kill_models")
    tmpdir = d / "tmp"
    tmpdir.mkdir()
    folds = [_start(["fold", "-v", "m0", "--seed", seed, "--img-size", 64, "--num-classes", 10,
                     "-o", d / f"m0_s{seed}.safetensors"], tmpdir, d) for seed in (0, 1)]
    for f in folds:
        _finish(f)
    old = _start(["onnx", "-c", d / "m0_s1.safetensors", "-o", d / "old" / "m0.onnx", "--no-check"], tmpdir, d)
    clean = {"onnx": _start(_onnx_args(d, d / "clean" / "m0.onnx"), tmpdir, d),
             "tflite": _start(_tflite_args(d, d / "clean" / "m0.tflite"), tmpdir, d)}
    _finish(old)
    seconds = {name: _finish(started) for name, started in clean.items()}
    seconds["package"] = _finish(_start(_package_args(d, d / "clean" / "pkg"), tmpdir, d))
    return d, seconds


def _onnx_args(d, out):
    return ["onnx", "-c", d / "m0_s0.safetensors", "-o", out, "--no-check"]


def _tflite_args(d, out):
    return ["tflite", "-c", d / "m0_s0.safetensors", "-o", out, "--no-check"]


def _package_args(d, out):
    return ["package", d / "old" / "m0.onnx", "-o", out, "--no-latency"]


def _sidecar_ok(artifact: Path) -> None:
    side = artifact.with_name(artifact.name + ".evit.json")
    if side.exists():
        json.loads(side.read_text())  # never half-written


def _package_state(folder: Path, reference) -> str | None:
    """A package is not byte-reproducible (it records when it was made): "new" when it
    holds the clean run's files and verify-package passes."""
    from evit_export.packaging.verify import verify_package

    if not isinstance(reference, dict) or not folder.is_dir():
        return None
    if sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) != sorted(reference):
        return None
    return "new" if verify_package(folder).ok else None


def _kill_workload(args, out: Path, old, new, seconds: float, tmp_path: Path, points: int):
    """``points`` kills, spread over ``seconds``, into a folder holding ``old``; then a
    clean run there. After each kill ``out`` is the old artifact or the complete new one."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    out.parent.mkdir(parents=True, exist_ok=True)
    if old.is_dir():
        shutil.copytree(old, out)
    else:
        shutil.copy2(old, out)
    old_bytes = _tree_bytes(out)

    def state() -> str:
        now = _tree_bytes(out)
        if now == old_bytes:
            return "old"
        if now == new or (out.is_dir() and _package_state(out, new)):
            return "new"
        return "BROKEN"

    outcomes = []
    for delay in _kill_points(seconds, points):
        code = _kill_at(args, delay, tmpdir, tmp_path)
        _wait_for_orphans()
        got = state()
        assert got != "BROKEN", f"killed at {delay:.1f} s of {seconds:.1f} s: {out} is neither the old nor the new one"
        if out.is_file():
            _sidecar_ok(out)
        outcomes.append((round(delay, 1), code, got, _temps(out.parent, out.name)))
    # the next run finishes and leaves nothing behind
    _ok(args, tmpdir, tmp_path)
    assert state() == "new"
    assert _temps(out.parent, out.name) == [], _temps(out.parent, out.name)
    assert _scratch_left(tmpdir) == [], "scratch folders of killed runs were not swept"
    return outcomes


def _points(default: int):
    return [pytest.param(default, id=f"{default}-points"), pytest.param(20, id="20-points", marks=pytest.mark.slow)]


@pytest.mark.parametrize("points", _points(1))
def test_kill_onnx_export(models, tmp_path, points):
    d, seconds = models
    out = tmp_path / "out" / "m0.onnx"
    _kill_workload(_onnx_args(d, out), out, d / "old" / "m0.onnx", _tree_bytes(d / "clean" / "m0.onnx"),
                   seconds["onnx"], tmp_path, points)


@pytest.mark.parametrize("points", _points(1))
def test_kill_tflite_export(models, tmp_path, points):
    d, seconds = models
    out = tmp_path / "out" / "m0.tflite"
    # the existing artifact: any file of that name must survive byte for byte
    old = tmp_path / "old.tflite"
    old.write_bytes((d / "old" / "m0.onnx").read_bytes()[:100_000])
    _kill_workload(_tflite_args(d, out), out, old, _tree_bytes(d / "clean" / "m0.tflite"), seconds["tflite"],
                   tmp_path, points)


@pytest.mark.parametrize("points", _points(1))
def test_kill_package(models, tmp_path, points):
    d, seconds = models
    out = tmp_path / "out" / "pkg"
    old = tmp_path / "old_pkg"
    # an earlier package of this tool (package refuses to replace any other folder)
    shutil.copytree(d / "clean" / "pkg", old)
    (old / "REPORT.md").write_text("an earlier package's report\n")
    _kill_workload(_package_args(d, out), out, old, _tree_bytes(d / "clean" / "pkg"), seconds["package"],
                   tmp_path, points)


def _train_args(run: Path, epochs: int):
    return ["train", "--epochs", epochs, "--img-size", 32, "--limit-train", 192, "--limit-val", 48,
            "--batch-size", 32, "--threads", 1, "--no-progress", "--out", run]


def _timed_training(args, tmpdir: Path, cwd: Path) -> tuple[float, float, float]:
    """A clean training run: (total seconds, when the first epoch started, when the
    last one ended), from the time its epoch lines appear."""
    proc = subprocess.Popen([sys.executable, "-m", "evit_export", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(tmpdir), cwd=cwd)
    t0 = time.monotonic()
    first = last = None
    for line in proc.stdout:
        now = time.monotonic() - t0
        if line.startswith("epoch "):
            if first is None:  # "... · 0.6 s · best": the epoch began that long ago
                seconds = [float(p.split()[0]) for p in line.split("·") if p.strip().endswith(" s")]
                first = now - (seconds[0] if seconds else 0.0)
            last = now
    assert proc.wait() == 0
    total = time.monotonic() - t0
    assert first is not None
    assert last is not None
    return total, first, last


def _run_state(run: Path) -> dict:
    """What a killed run left, checked for consistency: every final file is whole."""
    from safetensors.torch import load_file

    info = {}
    for name in ("model", "last"):
        st, js = run / f"{name}.safetensors", run / f"{name}.json"
        if st.exists():
            load_file(str(st))
            assert js.exists() or name == "last", f"{st} without its sidecar"
        if js.exists():
            info[name] = json.loads(js.read_text()).get("epoch")
    if (run / "log.json").exists():
        info["log_epochs"] = len(json.loads((run / "log.json").read_text())["epochs"])
    if (run / "train_state.pt").exists():
        import torch

        info["state_epoch"] = int(torch.load(str(run / "train_state.pt"), weights_only=True)["epoch"])
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".")] if run.exists() else []
    info["temps"] = leftovers
    return info


@pytest.mark.parametrize("points", _points(2))
def test_kill_training_and_resume(tmp_path, points):
    """Kill points over the whole run under ``slow``; by default both land while epochs
    run (where a kill can catch a checkpoint being written)."""
    epochs = 5
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    total, first, last = _timed_training(_train_args(tmp_path / "clean", epochs), tmpdir, tmp_path)
    delays = (_kill_points(total, points) if points >= 20
              else [first + (last - first) * f for f in _kill_points(1.0, points)])
    resumed = 0
    for i, delay in enumerate(delays):
        run = tmp_path / f"run{i}"
        code = _kill_at(_train_args(run, epochs), delay, tmpdir, tmp_path)
        info = _run_state(run)
        if code is not None or "state_epoch" not in info:
            continue  # finished before the kill, or killed before the first epoch ended
        done = info["state_epoch"]
        assert 1 <= done <= epochs
        proc, _ = _cli(_train_args(run, epochs) + ["--resume"], tmpdir, tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        if done < epochs:
            assert f"after epoch {done}/{epochs}" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        log = json.loads((run / "log.json").read_text())
        assert log["finished"]
        assert [e["epoch"] for e in log["epochs"]] == list(range(1, epochs + 1))
        assert _run_state(run)["temps"] == []
        resumed += 1
    assert resumed, "no kill landed between the first and the last epoch: the kill points are off"
    assert _scratch_left(tmpdir) == []


# --------------------------------------------------------------------------- full disk

def _full_disk(args, limit: int, tmpdir: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FSIZE_WRAPPER, str(limit), *map(str, args)], capture_output=True,
                          text=True, timeout=900, env=_env(tmpdir), cwd=cwd, check=False)


def _assert_one_line(proc, needle="space"):
    err = proc.stderr
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == 2, f"exit {proc.returncode}\n{err[-3000:]}"
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, err[-2000:]
    assert lines[-1].startswith("error:"), err[-2000:]
    assert needle in lines[-1], err[-2000:]
    assert sum(ln.startswith("error") for ln in lines) == 1, err


# ONNX and fold write through the same atomic_path as package and training: slow only.
@pytest.mark.parametrize("command", [pytest.param("onnx", marks=pytest.mark.slow), "tflite", "package",
                                     pytest.param("fold", marks=pytest.mark.slow)])
def test_full_disk_export(models, tmp_path, command):
    models = models[0]
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    name = {"onnx": "m0.onnx", "tflite": "m0.tflite", "package": "pkg", "fold": "m0.safetensors"}[command]
    out = out_dir / name
    if command == "package":
        shutil.copytree(models / "clean" / "pkg", out)  # an earlier package (anything else is refused)
        args = ["package", models / "old" / "m0.onnx", "-o", out, "--no-latency"]
    else:
        out.write_bytes(b"existing artifact " * 1000)
        args = [command, "-c", models / "m0_s0.safetensors", "-o", out, "--no-check"]
        if command == "fold":
            args = ["fold", "-v", "m0", "--seed", 0, "--img-size", 64, "--num-classes", 10, "-o", out]
    before = _tree_bytes(out)
    proc = _full_disk(args, 1_000_000, tmpdir, tmp_path)  # every artifact here is > 1 MB
    _assert_one_line(proc)
    assert _tree_bytes(out) == before
    assert _temps(out_dir, name) == []
    assert _scratch_left(tmpdir) == []


def test_full_disk_training_keeps_last_epoch(tmp_path):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    run = tmp_path / "run"
    _ok(_train_args(run, 1), tmpdir, tmp_path)
    before = _tree_bytes(run)
    # resume for one more epoch with a disk that is full: the epoch-1 files stay whole
    proc = _full_disk(_train_args(run, 2) + ["--resume"], 100_000, tmpdir, tmp_path)
    _assert_one_line(proc)
    assert _tree_bytes(run) == before
    assert _run_state(run)["temps"] == []
