"""Training as real processes: torchrun with two CPU processes (gloo, 127.0.0.1), and
Ctrl-C keeping the last completed epoch intact with exit 130."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from evit_export import load_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
           str(_free_port()), "-m", "evit_export", "train", "--img-size", "32", "--epochs", "1",
           "--batch-size", "16", "--limit-train", "64", "--limit-val", "20", "--out", str(tmp_path / "run"),
           "--threads", "1", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["world_size"] == 2
    assert log["finished"]
    assert "×2 processes" in proc.stderr
    model = load_model(checkpoint=tmp_path / "run" / "model.safetensors")
    assert model.spec.num_classes == 10
    x = torch.zeros(1, 3, 32, 32)
    assert model(x).shape == (1, 10)


def test_ctrl_c_keeps_last_epoch_and_exits_130(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "evit_export", "train", "--img-size", "32", "--epochs", "200", "--batch-size", "16",
           "--limit-train", "64", "--limit-val", "20", "--out", str(run), "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (run / "log.json").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    log = json.loads((run / "log.json").read_text())
    done = log["epochs"][-1]["epoch"]
    assert 1 <= done < 200
    assert not log["finished"]
    # one line, saying what was stopped and what is left
    line = err.strip().splitlines()[-1]
    assert line == (f"interrupted: training stopped; {run / 'last.safetensors'} holds epoch {done} "
                    "(model.safetensors: the best so far); continue with --resume"), err
    assert json.loads((run / "last.json").read_text())["epoch"] == done
    assert 1 <= json.loads((run / "model.json").read_text())["epoch"] <= done
    for name in ("model.safetensors", "last.safetensors"):
        assert load_model(checkpoint=run / name).spec.labels[0] == "0"
    assert not list(run.glob(".*.tmp"))
    # and the run continues from there
    proc2 = subprocess.run(cmd[:4] + ["--out", str(run), "--resume", "--epochs", str(done + 1), "--threads", "1",
                                      "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc2.returncode == 0, proc2.stderr
    assert json.loads((run / "log.json").read_text())["epochs"][-1]["epoch"] == done + 1
