"""Time the default training run (EfficientViT-M0 on the embedded digits) end to end.

    .venv/bin/python benchmarks/bench_train.py [--out DIR] [extra `evit-export train` flags]

Runs ``evit-export train`` as a process (so imports and data rendering count), then
prints one JSON line: wall seconds, val top-1/top-5 of the saved checkpoint
(``model.safetensors``: the best epoch) and of the last epoch, training images/s,
threads used, the CPU's vector extensions and the machine's load average before and
after (other programs on a shared machine slow training down; report the load with
the figure).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    from evit_export.core.machine import cpu_flags

    out = None
    if "--out" in argv:
        i = argv.index("--out")
        out = Path(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    out = out or Path(tempfile.mkdtemp(prefix="bench_train_")) / "run"
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "evit_export", "train", "--out", str(out), "--no-progress", *argv],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode
    log = json.loads((out / "log.json").read_text())
    best = json.loads((out / "model.json").read_text())
    last = log["epochs"][-1]
    seconds = sum(e["seconds"] for e in log["epochs"])
    images = sum(e.get("train_images", log["dataset"]["train_images"]) for e in log["epochs"])
    print(json.dumps({"wall_seconds": round(wall, 1), "train_seconds": round(seconds, 1),
                      "val_top1": best["metrics"]["val_top1"], "val_top5": best["metrics"]["val_top5"],
                      "best_epoch": best["epoch"], "last_val_top1": last["val_top1"], "epochs": len(log["epochs"]),
                      "train_images_per_second": round(images / seconds, 1), "threads": log["threads"],
                      "cpu_count": os.cpu_count(), "cpu_flags": cpu_flags(),
                      "load_before": [round(v, 2) for v in load_before],
                      "load_after": [round(v, 2) for v in os.getloadavg()],
                      "checkpoint": str(out / "model.safetensors")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
