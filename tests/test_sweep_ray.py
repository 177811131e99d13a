"""``sweep --executor ray`` on a real two-node Ray cluster on 127.0.0.1, started by the
test with ``ray start --head`` and ``ray start --address``: cells spread over both
nodes, verdicts equal a local run's, artifacts arrive intact in --out, a re-run keeps
everything; killing the second node's raylet mid-sweep loses no finished cell (slow)."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, pids_where, run_cli
from ssh_helpers import free_port

from evit_export.core.jsonio import loads_strict
from evit_export.sweep.results import sha256_artifact

pytest.importorskip("ray", reason="Ray is not installed: pip install 'evit-export[cluster]'")
pytestmark = pytest.mark.integration
RAY = str(Path(sys.executable).with_name("ray"))
SMALL = ["--variants", "m0", "--targets", "onnx", "--img-size", "64"]


def _ray(env, *args, timeout=180):
    proc = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, one CPU each, on 127.0.0.1; the second carries the
    custom resource "second" so the test can find (and kill) its raylet."""
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = dict(os.environ, RAY_TMPDIR=tmp)
    port = free_port()
    try:
        _ray(env, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "1",
             "--include-dashboard", "false", "--disable-usage-stats")
        _ray(env, "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
             "--resources", '{"second": 1}', "--disable-usage-stats")
        yield {"address": f"127.0.0.1:{port}", "env": env}
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def sweep(env, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "evit_export", "sweep", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def results_of(out: Path) -> dict:
    return loads_strict((out / "results.json").read_text())


def second_raylet() -> int:
    """pid of the raylet of the node holding the "second" resource."""
    # --static_resource_list=second,1,CPU,1,...
    found = pids_where(lambda cmd: cmd.split("\0")[0].endswith("/raylet") and "second,1" in cmd)
    if not found:
        pytest.fail("the second node's raylet is not running")
    return found[0]


@pytest.fixture(scope="module")
def ray_sweep(cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "ray"
    proc = sweep(cluster["env"], *SMALL, "--precisions", "fp32,fp16", "--executor", "ray",
                 "--ray-address", cluster["address"], "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_cells_spread_over_both_nodes_and_resume(cluster, ray_sweep):
    on_ray = results_of(ray_sweep)
    assert on_ray["complete"]
    assert on_ray["executor"]["kind"] == "ray"
    cells = on_ray["cells"]
    assert len({c["node_id"] for c in cells}) == 2, [c.get("node_id") for c in cells]  # one CPU per node
    for c in cells:
        assert c["host"]
        assert c["status"] == "done"
        assert c["verdict"] == "pass"
        # The artifact came back to --out whole: the node's digest matches the driver's file.
        assert sha256_artifact(ray_sweep / c["artifact"]) == c["sha256"]
        assert (ray_sweep / "logs" / f"{c['id']}.log").read_text().count(c["node_id"]) == 1
        assert c["latency"]["median_ms"] > 0  # measured on the driver, after the builds
    assert (ray_sweep / "report.html").is_file()
    assert (ray_sweep / "results.csv").is_file()

    # Resume works as locally: everything is kept, nothing is submitted again.
    proc = sweep(cluster["env"], *SMALL, "--precisions", "fp32,fp16", "--executor", "ray",
                 "--ray-address", cluster["address"], "--out", ray_sweep)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 kept from the previous run" in proc.stderr
    assert [c["stages"] for c in results_of(ray_sweep)["cells"]] == [c["stages"] for c in cells]


@pytest.mark.slow
def test_verdicts_equal_a_local_run(cluster, ray_sweep, tmp_path):
    local_out = tmp_path / "local"
    proc = sweep(cluster["env"], *SMALL, "--precisions", "fp32,fp16", "--jobs", "2", "--out", local_out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = {c["id"]: c for c in results_of(local_out)["cells"]}
    for c in results_of(ray_sweep)["cells"]:
        assert c["verdict"] == local[c["id"]]["verdict"]
        assert c["equivalence"]["passed"] == local[c["id"]]["equivalence"]["passed"]
        assert c["equivalence"]["max_abs"] == pytest.approx(local[c["id"]]["equivalence"]["max_abs"], rel=0.5)


@pytest.mark.slow
def test_measure_on_a_resource_times_every_cell_on_its_node(cluster, tmp_path):
    """--measure-on second: latency is measured on the node holding that custom resource
    (one cell at a time there), not on the driver, and each record says where."""
    out = tmp_path / "measured"
    proc = sweep(cluster["env"], *SMALL, "--precisions", "fp32,fp16", "--executor", "ray",
                 "--ray-address", cluster["address"], "--measure-on", "second", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = results_of(out)
    assert res["executor"]["measure_on"] == "second"
    cells = res["cells"]
    assert len({c["measure_node_id"] for c in cells}) == 1, cells  # the one node with the resource
    for c in cells:
        assert c["latency"]["median_ms"] > 0 and c["latency"]["peak_rss_bytes"] > 0, c["latency"]
        assert c["measure_host"], c
        log = (out / "logs" / f"{c['id']}.log").read_text()
        assert f"stages measure on Ray node {c['measure_node_id']}" in log, log
    code = sweep(cluster["env"], *SMALL, "--executor", "ray", "--ray-address", cluster["address"],
                 "--measure-on", "no-such-resource", "--out", tmp_path / "nowhere")
    assert code.returncode == 2 and "no node of the cluster has that resource" in code.stderr, code.stderr
    assert not (tmp_path / "nowhere").exists()


def _cell_tasks_running() -> list[int]:
    """pids of Ray workers executing a cell task now (titled ``ray::evit-sweep CELL STAGES``)."""
    return pids_where(lambda cmd: cmd.startswith("ray::evit-sweep "))


def _ray_sweep_until_a_cell_is_built(cluster, out, variants: str):
    """Start a Ray sweep as a real process; return it, and the cells (id -> record) that
    had finished their build when the first did."""
    args = ["--variants", variants, "--targets", "onnx", "--precisions", "fp32,fp16", "--img-size", "64",
            "--executor", "ray", "--ray-address", cluster["address"], "--out", out]
    proc = subprocess.Popen([sys.executable, "-m", "evit_export", "sweep", *map(str, args)], env=cluster["env"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no cell finished its build"
        if (out / "results.json").exists():
            finished = {c["id"]: c for c in results_of(out)["cells"] if "build" in c["stages"]}
            if finished:
                return proc, finished
        time.sleep(0.2)


@pytest.mark.slow
def test_ctrl_c_on_the_driver_cancels_the_clusters_tasks_and_keeps_what_finished(cluster, tmp_path):
    """SIGINT to the driver once a cell has finished: exit 130 with what the sweep keeps,
    the finished cells in results.json, and no cell task left running on the cluster."""
    out = tmp_path / "stopped"
    proc, _ = _ray_sweep_until_a_cell_is_built(cluster, out, "m0,m1,m2")
    assert _cell_tasks_running(), "the other cells' tasks should still be running"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: sweep stopped; {out / 'results.json'} holds "), err
    assert "Traceback" not in err
    finished = [c for c in results_of(out)["cells"] if "build" in c["stages"]]
    assert finished and all((out / c["artifact"]).is_file() for c in finished)
    deadline = time.time() + 30
    while _cell_tasks_running():  # ray.cancel(force=True) kills the workers
        assert time.time() < deadline, f"cell tasks still running: {_cell_tasks_running()}"
        time.sleep(0.5)


def test_cluster_options_are_checked(capsys, tmp_path):
    code, _, err = run_cli(capsys, "sweep", *SMALL, "--executor", "spark", "--out", tmp_path / "o")
    assert "local or ray" in assert_one_line_error(code, err)
    code, _, err = run_cli(capsys, "sweep", *SMALL, "--ray-address", "auto", "--out", tmp_path / "o")
    assert "--executor ray" in assert_one_line_error(code, err)
    code, _, err = run_cli(capsys, "sweep", *SMALL, "--executor", "ray", "--jobs", "2", "--out", tmp_path / "o")
    assert "--jobs" in assert_one_line_error(code, err)
    code, _, err = run_cli(capsys, "sweep", *SMALL, "--executor", "ray", "--ray-address", f"127.0.0.1:{free_port()}",
                           "--out", tmp_path / "o")
    assert "cannot reach the Ray cluster" in assert_one_line_error(code, err)


@pytest.mark.slow
def test_a_node_dying_mid_sweep_loses_no_finished_cell(cluster, tmp_path):
    out = tmp_path / "out"
    proc, finished = _ray_sweep_until_a_cell_is_built(cluster, out, "m0,m1")
    os.kill(second_raylet(), signal.SIGKILL)
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    after = {c["id"]: c for c in results_of(out)["cells"]}
    assert results_of(out)["complete"]
    for cell, before in finished.items():  # recorded before the kill: untouched since
        assert after[cell]["stages"]["build"] == before["stages"]["build"]
        assert after[cell]["sha256"] == before["sha256"] == sha256_artifact(out / before["artifact"])
    for c in after.values():
        assert c["status"] == "done" or (c["status"] == "failed" and "Ray task failed" in c["reason"]), c
    assert any(c["status"] == "done" and c["id"] not in finished for c in after.values())
