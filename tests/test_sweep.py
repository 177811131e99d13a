"""``evit-export sweep``: real exports, checks and timings in real worker processes;
a failing cell, a sweep killed with SIGKILL and resumed, skipped cells, bad input."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, pids_where, run_cli
from evit_export.core.jsonio import loads_strict


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory):
    from evit_export.data import write_digits_imagefolder

    return write_digits_imagefolder(tmp_path_factory.mktemp("cal"), splits=("train",)) / "train"


def results_of(out: Path) -> dict:
    return loads_strict((out / "results.json").read_text())


def sweep_process(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evit_export", "sweep", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cell_workers(out: Path) -> list[int]:
    """pids of sweep worker processes working for the sweep in ``out``."""
    return pids_where(lambda cmd: "evit_export.sweep.worker" in cmd and str(out) in cmd)


def kill_after_first_cell(args: list, out: Path, timeout: float = 900) -> dict:
    """Start the sweep as a real process, SIGKILL it once at least one cell has finished
    its export and check (and before all have); the results it left behind."""
    proc = sweep_process(*args)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if (out / "results.json").exists():
                cells = [c for c in results_of(out)["cells"] if c["status"] != "skipped"]
                built = [c for c in cells if "build" in c["stages"] or c["status"] == "failed"]
                if built:
                    assert len(built) < len(cells), "the sweep finished before it could be killed"
                    break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        else:
            pytest.fail("no cell finished in time")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    for _ in range(50):  # the cell processes die with the sweep (PR_SET_PDEATHSIG)
        if not cell_workers(out):
            break
        time.sleep(0.1)
    assert not cell_workers(out), "a cell process outlived the killed sweep"
    return results_of(out)


def assert_resumed(before: dict, after: dict) -> None:
    """Cells finished (or built) before the kill keep their start times; every cell now
    has a verdict."""
    old = {c["id"]: c for c in before["cells"]}
    for cell in after["cells"]:
        assert cell["status"] in ("done", "failed", "skipped"), cell
        assert cell["verdict"] in ("pass", "fail", "error", "skipped"), cell
        prev = old[cell["id"]]
        if "build" in prev["stages"]:
            assert cell["started_at"] == prev["started_at"]
            assert cell["stages"]["build"] == prev["stages"]["build"]  # not rebuilt


def verdicts(results: dict) -> dict:
    return {c["id"]: c["verdict"] for c in results["cells"]}


def test_failing_cell_is_recorded_and_a_rerun_keeps_everything(tmp_path, capsys):
    bad = tmp_path / "m1_broken.pth"
    bad.write_bytes(b"not a checkpoint at all")
    out = tmp_path / "sweep"
    args = ["sweep", "--variants", "m0,m1", "--targets", "onnx", "--precisions", "fp32", "--img-size", "32",
            "--weights", f"m1={bad}", "--out", out]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    res = results_of(out)
    cells = {c["id"]: c for c in res["cells"]}
    assert cells["m0-onnx-fp32"]["verdict"] == "pass"
    lat = cells["m0-onnx-fp32"]["latency"]
    assert lat["median_ms"] > 0
    # what the device pays, measured in a fresh process: load, first call, tail, memory
    assert lat["load_ms"] > 0 and lat["first_ms"] > 0 and lat["p99_ms"] >= lat["p50_ms"] > 0
    assert lat["peak_rss_bytes"] > 0
    # planned from the graph: an M0 at 32 px with 10 classes holds ~2.2M fp32 weights
    assert 8.0e6 < cells["m0-onnx-fp32"]["weight_bytes"] < 10.0e6
    assert 0 < cells["m0-onnx-fp32"]["activation_bytes"] < 1e6
    failed = cells["m1-onnx-fp32"]
    assert failed["status"] == "failed"
    assert failed["verdict"] == "error"
    assert "\n" not in failed["reason"]
    assert "m1_broken.pth" in failed["reason"]
    assert str(tmp_path) not in json.dumps(res)  # no machine paths in the results
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["id"] for r in rows] == ["m0-onnx-fp32", "m1-onnx-fp32"]
    assert rows[0]["verdict"] == "pass"
    assert float(rows[0]["latency_median_ms"]) > 0
    assert float(rows[0]["peak_rss_bytes"]) > 0 and float(rows[0]["activation_bytes"]) > 0
    assert (out / "report.html").is_file()
    assert (out / "artifacts" / "m0-onnx-fp32.onnx").is_file()

    code, _, err = run_cli(capsys, *args)  # nothing changed: nothing runs again
    assert code == 0, err
    assert "2 kept from the previous run, 0 resumed, 0 to run" in err
    again = results_of(out)
    assert [(c["started_at"], c["verdict"]) for c in again["cells"]] == \
        [(c["started_at"], c["verdict"]) for c in res["cells"]]

    # A changed artifact no longer matches its recorded sha256: that cell runs again.
    artifact = out / "artifacts" / "m0-onnx-fp32.onnx"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    code, _, err = run_cli(capsys, *args)
    assert code == 0
    assert "1 kept from the previous run, 0 resumed, 1 to run" in err
    redone = {c["id"]: c for c in results_of(out)["cells"]}
    assert redone["m0-onnx-fp32"]["started_at"] != cells["m0-onnx-fp32"]["started_at"]
    assert redone["m0-onnx-fp32"]["verdict"] == "pass"


# Opt-in (55 s): by default, resume is shown by test_failing_cell_is_recorded_and_a_rerun_keeps_everything
# and SIGKILL safety by tests/test_kills.py.
@pytest.mark.slow
def test_sigkill_then_rerun_finishes_only_the_missing_cells(tmp_path):
    args = ["--variants", "m0", "--targets", "onnx", "--precisions", "fp32,fp16", "--img-size", "32"]
    killed = tmp_path / "killed"
    before = kill_after_first_cell(args + ["--out", killed], killed)
    rerun = subprocess.run([sys.executable, "-m", "evit_export", "sweep", *args, "--out", str(killed)],
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    # The export and check of m0-onnx-fp32 were done: it resumes at its latency.
    assert "0 kept from the previous run, 1 resumed, 1 to run" in rerun.stderr
    after = results_of(killed)
    assert_resumed(before, after)
    clean = tmp_path / "clean"
    code = subprocess.run([sys.executable, "-m", "evit_export", "sweep", *args, "--out", str(clean)],
                          capture_output=True, text=True, timeout=600)
    assert code.returncode == 0, code.stderr
    assert verdicts(after) == verdicts(results_of(clean)) == {"m0-onnx-fp32": "pass", "m0-onnx-fp16": "pass"}


@pytest.mark.slow
def test_acceptance_matrix_killed_and_resumed_equals_clean_run(tmp_path, calibration_dir):
    """The issue's acceptance: m0,m1 × onnx,tflite × fp32,int8 with random weights and a
    calibration folder; 8 cells each with a verdict; SIGKILL part-way and re-run."""
    args = ["--variants", "m0,m1", "--targets", "onnx,tflite", "--precisions", "fp32,int8", "--img-size", "64",
            "--calibration-data", calibration_dir, "--calibration-size", "32", "--jobs", "2"]
    clean = tmp_path / "clean"
    run = subprocess.run([sys.executable, "-m", "evit_export", "sweep", *map(str, args), "--out", str(clean)],
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr
    res = results_of(clean)
    assert len(res["cells"]) == 8
    assert all(c["verdict"] in ("pass", "fail") for c in res["cells"])
    killed = tmp_path / "killed"
    before = kill_after_first_cell(args + ["--out", killed], killed)
    rerun = subprocess.run([sys.executable, "-m", "evit_export", "sweep", *map(str, args), "--out", str(killed)],
                           capture_output=True, text=True, timeout=1800)
    assert rerun.returncode == 0, rerun.stderr
    after = results_of(killed)
    assert_resumed(before, after)
    assert verdicts(after) == verdicts(res)


def test_impossible_cells_are_listed_as_skipped(tmp_path):
    from dataclasses import dataclass

    from evit_export.sweep.run import SweepConfig, plan_cells
    from evit_export.targets import PrecisionNotApplicable, Target, TargetOptions, register_target
    from evit_export.targets import unregister_target

    @dataclass(frozen=True)
    class Fp32Only(TargetOptions):
        @classmethod
        def for_precision(cls, precision, *, calibration_data=None, calibration_size=200, batch=1):
            if precision != "fp32":
                raise PrecisionNotApplicable(f"this format has no {precision} arithmetic")
            return cls()

        def precision_label(self):
            return "fp32"

    class Fp32Target(Target):
        name, suffixes, precisions = "fp32only", (".fp32",), ("fp32", "int8")
        memory_bound_ops, options_type = frozenset(), Fp32Only

        def export(self, model, spec, out, options=None):
            raise NotImplementedError

        open = describe = inspect = embedded_spec_text = export

    register_target(Fp32Target)
    try:
        config = SweepConfig(("m0",), ("onnx", "fp32only"), ("fp32", "fp16", "int8"), tmp_path).validated()
        cells = {c["id"]: c for c in plan_cells(config)}
    finally:
        unregister_target("fp32only")
    assert len(cells) == 6
    assert cells["m0-fp32only-fp16"]["status"] == "skipped"
    assert "does not export fp16" in cells["m0-fp32only-fp16"]["reason"]
    assert cells["m0-fp32only-int8"]["reason"] == "this format has no int8 arithmetic"
    assert cells["m0-fp32only-fp32"]["status"] == "pending"
    assert cells["m0-onnx-int8"]["status"] == "pending"
    assert cells["m0-onnx-int8"]["precision_label"].startswith("int8")


@pytest.mark.parametrize("extra, needle", [
    (["--variants", "m9"], "m9"),
    (["--variants", "m0", "--targets", "onnx,caffe"], "caffe"),
    (["--variants", "m0", "--precisions", "fp8"], "fp8"),
    (["--variants", "m0", "--simulate", "no-such-phone"], "no-such-phone"),
    (["--variants", "m0", "--weights", "m0"], "VARIANT=CHECKPOINT"),
    (["--variants", "m0", "--weights", "m1=x.pth"], "x.pth"),
    (["--variants", "m0", "--data", "no/such/folder"], "--data"),
    (["--variants", "m0", "--jobs", "0"], "--jobs"),
    (["--variants", "m0", "--img-size", "16"], "--img-size"),
    (["--variants", "m0", "--max-retries", "5"], "--max-retries is for --executor ray"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, needle):
    out = tmp_path / "sweep"
    code, _, err = run_cli(capsys, "sweep", *extra, "--out", out)
    assert needle in assert_one_line_error(code, err)
    assert not out.exists()


def test_a_rerun_with_another_configuration_adds_to_the_sweep(tmp_path, capsys):
    """Issue 19.8: a re-run with another checkpoint and other precisions shrank
    results.json from its earlier cells to the new one. Now earlier cells stay in
    results.json and the report, re-run where they are in the new matrix and their inputs
    changed, marked stale where they are not; the command says what changed, and
    --fresh starts over."""
    from evit_export.models.checkpoint import save_project_checkpoint
    from evit_export.models.reference import prepare_model

    model = prepare_model("m0", None, 10, 32, seed=3)
    checkpoint = save_project_checkpoint(model, model.spec, tmp_path / "m0_other.safetensors")
    out = tmp_path / "sweep"
    first = ["sweep", "--variants", "m0", "--targets", "onnx", "--precisions", "fp32,fp16", "--img-size", "32",
             "--num-classes", "10", "--out", out]
    code, _, err = run_cli(capsys, *first)
    assert code == 0, err
    before = {c["id"]: c for c in results_of(out)["cells"]}
    assert set(before) == {"m0-onnx-fp32", "m0-onnx-fp16"}

    second = ["sweep", "--variants", "m0", "--targets", "onnx", "--precisions", "fp32", "--img-size", "32",
              "--num-classes", "10", "--weights", f"m0={checkpoint}", "--out", out]
    code, _, err = run_cli(capsys, *second)
    assert code == 0, err
    said = " ".join(err.split())
    assert "changed since the last sweep" in said, err
    assert "precisions fp32,fp16 -> fp32" in said, err
    assert "weights none -> m0=m0_other.safetensors" in said
    assert "1 earlier cell not in this matrix kept" in said
    assert "1 stale: m0-onnx-fp16" in said, err
    after = {c["id"]: c for c in results_of(out)["cells"]}
    assert set(after) == {"m0-onnx-fp32", "m0-onnx-fp16"}
    assert after["m0-onnx-fp32"]["sha256"] != before["m0-onnx-fp32"]["sha256"]  # rebuilt from the new weights
    assert after["m0-onnx-fp32"]["verdict"] == "pass"
    assert not after["m0-onnx-fp32"].get("stale")
    assert after["m0-onnx-fp16"]["stale"].startswith("built with other weights")
    assert after["m0-onnx-fp16"]["sha256"] == before["m0-onnx-fp16"]["sha256"]  # kept as it was
    assert "m0-onnx-fp16" in (out / "report.html").read_text()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(r["id"] for r in rows) == ["m0-onnx-fp16", "m0-onnx-fp32"]

    code, _, err = run_cli(capsys, *second, "--fresh")
    assert code == 0, err
    assert [c["id"] for c in results_of(out)["cells"]] == ["m0-onnx-fp32"]
    assert not list((out / "artifacts").glob("m0-onnx-fp16*"))


def test_ctrl_c_says_what_the_sweep_keeps(tmp_path):
    """Issue 19.7: every command says what it stopped and what is on disk now."""
    out = tmp_path / "sweep"
    proc = sweep_process("--variants", "m0,m1", "--targets", "onnx", "--precisions", "fp32", "--img-size", "32",
                         "--out", out)
    deadline = time.time() + 900
    while time.time() < deadline:
        if (out / "results.json").exists() and any(c["status"] in ("done", "failed") or "build" in c["stages"]
                                                   for c in results_of(out)["cells"]):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: sweep stopped; {out / 'results.json'} holds "), err
    assert last.endswith("of 2; the same command resumes"), err
    assert "Traceback" not in err


def test_progress_bar_fits_80_columns():
    """Issue 19.16: the sweep's progress line is whole at 80 columns (piped output)."""
    import io

    from rich.console import Console

    from evit_export.sweep.run import progress_line, progress_text

    console = Console(width=80, file=io.StringIO(), force_terminal=False)
    progress = progress_line(console)
    task = progress.add_task(progress_text("measure", 20, 2, 1), total=48, completed=20)
    progress.update(task, description=progress_text("measure", 20, 2, 1))
    console.print(progress.make_tasks_table(progress.tasks))
    lines = [line for line in console.file.getvalue().splitlines() if line.strip()]
    assert lines, "nothing rendered"
    for line in lines:
        assert len(line) <= 80, line
        assert "…" not in line, line
    assert "measure: 20 done, 2 running, 1 failed" in lines[0]
    assert "20/48" in lines[0]


def test_a_cells_reason_speaks_the_commands_flags(tmp_path, capsys):
    """Issue 19.10: a cell that fails for a missing input names the sweep's flag
    (--calibration-data DIR), not the API's parameter (calibration_data=DIR)."""
    out = tmp_path / "sweep"
    code, printed, err = run_cli(capsys, "sweep", "--variants", "m0", "--targets", "onnx", "--precisions", "int8",
                                 "--img-size", "32", "--num-classes", "10", "--out", out)
    assert code == 0, err
    cell = results_of(out)["cells"][0]
    assert cell["status"] == "failed" and "calibration_data=DIR" in cell["reason"], cell
    table = " ".join(printed.replace("│", " ").split())
    assert "--calibration-data DIR" in table, printed
    assert "calibration_data=" not in table, printed
