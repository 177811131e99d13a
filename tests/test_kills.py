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

Default: 2 kill points per workload; ``-m slow``: 20 per workload.
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


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two small models (M0, 64 px, 10 classes, seeds 0 and 1) and the seed-1 artifacts
    that play the existing ones."""
    d = tmp_path_factory.mktemp("kill_models")
    tmpdir = d / "tmp"
    tmpdir.mkdir()
    for seed in (0, 1):
        _ok(["fold", "-v", "m0", "--seed", seed, "--img-size", 64, "--num-classes", 10,
             "-o", d / f"m0_s{seed}.safetensors"], tmpdir, d)
    _ok(["onnx", "-c", d / "m0_s1.safetensors", "-o", d / "old" / "m0.onnx", "--no-check"], tmpdir, d)
    return d


def _sidecar_ok(artifact: Path) -> None:
    side = artifact.with_name(artifact.name + ".evit.json")
    if side.exists():
        json.loads(side.read_text())  # never half-written


def _kill_workload(args, out: Path, old, tmp_path: Path, points: int, check_new=None):
    """Clean run (timed, its output is "new"), then ``points`` kills into a folder holding
    ``old``, then a clean run there. Returns a summary for the report."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    clean_out = clean_dir / out.name
    seconds = _ok([a if a != out else clean_out for a in args], tmpdir, tmp_path)
    new = _tree_bytes(clean_out)
    assert new is not None
    out.parent.mkdir(parents=True, exist_ok=True)
    if old is not None:
        if isinstance(old, Path) and old.is_dir():
            shutil.copytree(old, out)
        else:
            shutil.copy2(old, out)
    old_bytes = _tree_bytes(out)
    outcomes = []
    for delay in _kill_points(seconds, points):
        code = _kill_at(args, delay, tmpdir, tmp_path)
        _wait_for_orphans()
        now = _tree_bytes(out)
        state = "old" if now == old_bytes else "new" if now == new else "BROKEN"
        if state == "new" and check_new is not None:
            check_new(out)
        assert state != "BROKEN", f"killed at {delay:.1f} s of {seconds:.1f} s: {out} is neither the old nor the new one"
        if out.is_file():
            _sidecar_ok(out)
        outcomes.append((round(delay, 1), code, state, _temps(out.parent, out.name)))
    # the next run finishes and leaves nothing behind
    _ok(args, tmpdir, tmp_path)
    assert _tree_bytes(out) == new
    assert _temps(out.parent, out.name) == [], _temps(out.parent, out.name)
    assert _scratch_left(tmpdir) == [], "scratch folders of killed runs were not swept"
    return seconds, outcomes


POINTS = [pytest.param(2, id="2-points"), pytest.param(20, id="20-points", marks=pytest.mark.slow)]


@pytest.mark.parametrize("points", POINTS)
def test_kill_onnx_export(models, tmp_path, points):
    out = tmp_path / "out" / "m0.onnx"
    args = ["onnx", "-c", models / "m0_s0.safetensors", "-o", out, "--no-check"]
    _kill_workload(args, out, models / "old" / "m0.onnx", tmp_path, points)


@pytest.mark.parametrize("points", POINTS)
def test_kill_tflite_export(models, tmp_path, points):
    out = tmp_path / "out" / "m0.tflite"
    args = ["tflite", "-c", models / "m0_s0.safetensors", "-o", out, "--no-check"]
    # the existing artifact: any file of that name must survive byte for byte
    old = tmp_path / "old.tflite"
    old.write_bytes((models / "old" / "m0.onnx").read_bytes()[:100_000])
    _kill_workload(args, out, old, tmp_path, points)


@pytest.mark.parametrize("points", POINTS)
def test_kill_package(models, tmp_path, points):
    out = tmp_path / "out" / "pkg"
    args = ["package", models / "old" / "m0.onnx", "-o", out, "--no-latency"]
    old = tmp_path / "old_pkg"
    old.mkdir()
    (old / "README.txt").write_text("an earlier package\n")
    (old / "model.onnx").write_bytes(b"earlier model")
    _kill_workload(args, out, old, tmp_path, points)


def _train_args(run: Path, epochs: int):
    return ["train", "--epochs", epochs, "--img-size", 32, "--limit-train", 96, "--limit-val", 48,
            "--batch-size", 32, "--threads", 1, "--no-progress", "--out", run]


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


@pytest.mark.parametrize("points", POINTS)
def test_kill_training_and_resume(tmp_path, points):
    epochs = 4
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    seconds = _ok(_train_args(tmp_path / "clean", epochs), tmpdir, tmp_path)
    resumed = 0
    for i, delay in enumerate(_kill_points(seconds, points)):
        run = tmp_path / f"run{i}"
        code = _kill_at(_train_args(run, epochs), delay, tmpdir, tmp_path)
        info = _run_state(run)
        if code is not None or "state_epoch" not in info:
            continue  # finished before the kill, or killed before the first epoch ended
        done = info["state_epoch"]
        assert 1 <= done <= epochs
        # only the default run resumes every kill; one resume is enough to prove it otherwise
        if points < 20 and resumed:
            continue
        proc, _ = _cli(_train_args(run, epochs) + ["--resume"], tmpdir, tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        if done < epochs:
            assert f"after epoch {done}/{epochs}" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        log = json.loads((run / "log.json").read_text())
        assert log["finished"] and [e["epoch"] for e in log["epochs"]] == list(range(1, epochs + 1))
        assert _run_state(run)["temps"] == []
        resumed += 1
    assert resumed, "no kill landed between the first and the last epoch: the kill points are off"


# --------------------------------------------------------------------------- full disk

def _full_disk(args, limit: int, tmpdir: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FSIZE_WRAPPER, str(limit), *map(str, args)], capture_output=True,
                          text=True, timeout=900, env=_env(tmpdir), cwd=cwd, check=False)


def _assert_one_line(proc, needle="space"):
    err = proc.stderr
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == 2, f"exit {proc.returncode}\n{err[-3000:]}"
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error:") and needle in lines[-1], err[-2000:]
    assert sum(ln.startswith("error") for ln in lines) == 1, err


@pytest.mark.parametrize("command", ["onnx", "tflite", "package", "fold"])
def test_full_disk_export(models, tmp_path, command):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    name = {"onnx": "m0.onnx", "tflite": "m0.tflite", "package": "pkg", "fold": "m0.safetensors"}[command]
    out = out_dir / name
    if command == "package":
        out.mkdir()
        (out / "README.txt").write_text("an earlier package\n")
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
