"""Issue 19.7: Ctrl-C during the check an export runs on its artifact. The artifact is
written and checked in a private folder beside ``--out`` and published only when the
check has finished, so Ctrl-C then keeps the earlier artifact byte for byte (or leaves
none), says what it stopped and what is on disk, within a second; a check that fails
(not interrupted) still publishes the artifact, to be diagnosed."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# a one-second bound: measured with no other test loading the machine (see `make test`)
pytestmark = pytest.mark.timing

API_EXPORT = textwrap.dedent("""
    import sys
    import evit_export
    from evit_export.core.interrupt import Cancelled
    model = evit_export.load_model("m0", img_size=64, num_classes=10, seed=int(sys.argv[2]))
    try:
        evit_export.export(model, "onnx", out=sys.argv[1], check=True, n=int(sys.argv[3]))
    except Cancelled as e:
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(130)
""")


def _stage(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".stage.tmp")]


def _interrupt_during_check(proc, folder: Path, name: str) -> tuple[float, str, str]:
    """Wait until the artifact sits complete in the staging folder (the check is running),
    send SIGINT; return the seconds until the process said it was interrupted, and the
    rest of its stdout and stderr (the interpreter's own exit takes a second more with
    torch and a runtime loaded: that is not the reaction)."""
    deadline = time.monotonic() + 600
    while not any((stage / name).exists() and (stage / f"{name}.evit.json").exists()
                  for stage in _stage(folder, name)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the check never started"
        time.sleep(0.02)
    time.sleep(0.5)  # into the comparison itself
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("interrupted"):
            break
    said = time.monotonic() - sent
    stdout, rest = proc.communicate(timeout=120)
    return said, stdout, "".join(lines) + rest


@pytest.fixture
def earlier(tmp_path):
    """An earlier artifact at the destination, exported and checked without interruption."""
    out = tmp_path / "m0.onnx"
    done = subprocess.run([sys.executable, "-c", API_EXPORT, str(out), "1", "2"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return out, out.read_bytes(), (tmp_path / "m0.onnx.evit.json").read_bytes()


def test_ctrl_c_during_the_api_check_keeps_the_earlier_artifact(earlier, tmp_path):
    out, artifact_bytes, sidecar_bytes = earlier
    proc = subprocess.Popen([sys.executable, "-c", API_EXPORT, str(out), "2", "4000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seconds, _, err = _interrupt_during_check(proc, tmp_path, out.name)
    assert proc.returncode == 130, err
    assert seconds < 1.0, f"took {seconds:.2f} s to stop"
    assert err.strip().splitlines()[-1] == (f"interrupted: ONNX equivalence check of m0.onnx stopped; nothing was "
                                            f"written: {out} is the earlier one, unchanged"), err
    assert out.read_bytes() == artifact_bytes
    assert (tmp_path / "m0.onnx.evit.json").read_bytes() == sidecar_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0.onnx", "m0.onnx.evit.json"]


def test_ctrl_c_during_the_cli_check_keeps_the_earlier_artifact(earlier, tmp_path):
    out, artifact_bytes, _ = earlier
    proc = subprocess.Popen([sys.executable, "-m", "evit_export", "onnx", "--variant", "m0", "--img-size", "64",
                             "--num-classes", "10", "--seed", "2", "--check-inputs", "4000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds, stdout, err = _interrupt_during_check(proc, tmp_path, out.name)
    assert proc.returncode == 130, err
    assert seconds < 1.0, f"took {seconds:.2f} s to stop"
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: ONNX equivalence check of m0.onnx stopped"), err
    assert "unchanged" in last, err
    assert "Traceback" not in err
    assert "PASS" not in stdout
    assert "wrote" not in stdout
    assert out.read_bytes() == artifact_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0.onnx", "m0.onnx.evit.json"]


def test_ctrl_c_during_the_check_of_a_new_artifact_leaves_none(tmp_path):
    out = tmp_path / "new" / "m0.onnx"
    proc = subprocess.Popen([sys.executable, "-c", API_EXPORT, str(out), "2", "4000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not out.parent.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    _, _, err = _interrupt_during_check(proc, out.parent, out.name)
    assert proc.returncode == 130, err
    assert err.strip().endswith(f"nothing was written ({out} was not created)"), err
    assert not out.parent.exists()  # the folder the export made for it went too


def test_a_failing_check_still_publishes_the_artifact(tmp_path):
    """Weights changed after loading: the artifact is not the model its spec names, the
    check fails; the artifact is published anyway, with the failing report."""
    import torch

    import evit_export

    model = evit_export.load_model("m0", img_size=64, num_classes=10, seed=0)
    with torch.no_grad():
        model.head.linear.weight.mul_(-3.0)
    artifact = evit_export.export(model, "onnx", out=tmp_path / "m0.onnx", check=True, n=4)
    report = artifact.info["equivalence"]
    assert report["passed"] is False, report
    assert report["failures"], report
    assert artifact.path == tmp_path / "m0.onnx"
    assert artifact.path.is_file()
    assert report["artifact"] == str(tmp_path / "m0.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0.onnx", "m0.onnx.evit.json"]


def test_a_failing_check_from_the_cli_keeps_the_artifact_and_exits_1(tmp_path):
    """Issue 19.7, the command-line half: an fp16 export whose activations overflow fp16
    fails its check (non-finite outputs); the artifact and its sidecar are written, to
    be diagnosed, and the command exits 1 with the failing verdict."""
    import torch
    from safetensors.torch import save_file

    import evit_export

    model = evit_export.load_model("m0", img_size=64, num_classes=10, seed=0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("patch_embed") and param.ndim == 4:
                param.mul_(40.0)  # activations past fp16's largest value (65504) inside the network
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "big.safetensors"))
    out = tmp_path / "out" / "m0.onnx"
    done = subprocess.run([sys.executable, "-m", "evit_export", "onnx", "-c", str(tmp_path / "big.safetensors"),
                           "--precision", "fp16", "--img-size", "64", "--num-classes", "10", "-o", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL" in done.stdout and "non-finite" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["m0.onnx", "m0.onnx.evit.json"]
