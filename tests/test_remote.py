"""bench --remote against a real OpenSSH server on 127.0.0.1, started by the test from a
temporary config (host key, authorized key, pid file all in a temp folder)."""
import json
import shutil
import subprocess
import sys

import pytest
from cli_helpers import assert_one_line_error, run_cli, run_cli_process
from ssh_helpers import NEEDS_SSHD, free_port, keygen, start_sshd

pytestmark = NEEDS_SSHD


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    d = tmp_path_factory.mktemp("sshd")
    client_key, other_key = keygen(d / "client_key"), keygen(d / "other_key")
    server = start_sshd(d, [d / "client_key.pub"])
    try:
        yield {"port": server.port, "key": client_key, "other_key": other_key, "host_pub": server.host_pub, "dir": d}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def m0_onnx(tmp_path_factory):
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets.onnx.exporter import export_onnx

    deployed, spec = deploy_for_export("m0", seed=0)
    return export_onnx(deployed, spec, tmp_path_factory.mktemp("remote") / "m0.onnx").path


def _bench(capsys, artifact, sshd, known_hosts, *extra, key=None, python=sys.executable):
    return run_cli(capsys, "bench", artifact, "--remote", f"root@127.0.0.1:{sshd['port']}", "--identity",
                   key or sshd["key"], "--remote-python", python, "--known-hosts", known_hosts, *extra)


def test_unknown_host_is_refused_then_accepted_once(capsys, sshd, m0_onnx, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    code, _, err = _bench(capsys, m0_onnx, sshd, known_hosts, "--iterations", "3")
    assert "--accept-new-host-key" in assert_one_line_error(code, err)  # unknown host refused by default
    assert not known_hosts.exists()

    code, out, err = _bench(capsys, m0_onnx, sshd, known_hosts, "--accept-new-host-key", "--iterations", "3",
                            "--json")
    assert code == 0, err
    (remote,) = json.loads(out)
    assert remote["kind"] == "measured"
    assert "remote 127.0.0.1" in remote["machine"]
    assert "onnxruntime" in remote["runtime"]
    assert f"[127.0.0.1]:{sshd['port']}" in known_hosts.read_text()

    # The key is now known: no flag needed, and the file is not appended again.
    code, _, err = _bench(capsys, m0_onnx, sshd, known_hosts, "--iterations", "3", "--json")
    assert code == 0, err
    assert known_hosts.read_text().count("127.0.0.1") == 1


# Two medians measured at different moments: under `make test`'s parallel phase the other
# worker's load fell on one and not the other (2.5 ms against 6.7 ms), so this runs alone.
@pytest.mark.timing
def test_remote_measurement_matches_local(capsys, sshd, m0_onnx, tmp_path):
    code, out, err = _bench(capsys, m0_onnx, sshd, tmp_path / "known_hosts", "--accept-new-host-key",
                            "--iterations", "30", "--json")
    assert code == 0, err
    remote = json.loads(out)[0]["median_ms"]
    # Locally in a process of its own, as a user runs it (this test process's torch threads
    # would compete with onnxruntime's).
    proc = run_cli_process("bench", m0_onnx, "--iterations", "30", "--json")
    assert proc.returncode == 0, proc.stderr
    local = json.loads(proc.stdout)[0]["median_ms"]
    assert 0.5 <= remote / local <= 2.0, (remote, local)


def test_wrong_key_and_changed_host_key_are_one_line_errors(capsys, sshd, m0_onnx, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    code, _, err = _bench(capsys, m0_onnx, sshd, known_hosts, "--accept-new-host-key", key=sshd["other_key"])
    assert "authentication" in assert_one_line_error(code, err)

    # A different key recorded for this host: refused even with --accept-new-host-key.
    other_pub = (sshd["other_key"].with_suffix(".pub")).read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{sshd['port']} {other_pub[0]} {other_pub[1]}\n")
    code, _, err = _bench(capsys, m0_onnx, sshd, known_hosts, "--accept-new-host-key")
    assert "CHANGED" in assert_one_line_error(code, err)
    assert known_hosts.read_text().count("127.0.0.1") == 1


def test_unreachable_and_missing_runtime(capsys, sshd, m0_onnx, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    code, _, err = run_cli(capsys, "bench", m0_onnx, "--remote", f"root@127.0.0.1:{free_port()}",
                           "--identity", sshd["key"], "--known-hosts", known_hosts)
    assert "cannot reach" in assert_one_line_error(code, err)

    bare_python = shutil.which("python3", path="/usr/bin")
    probe = subprocess.run([bare_python or "/nonexistent", "-c", "import onnxruntime"], capture_output=True) \
        if bare_python else None
    if probe is not None and probe.returncode != 0:
        code, _, err = _bench(capsys, m0_onnx, sshd, known_hosts, "--accept-new-host-key", python=bare_python)
        assert "pip install onnxruntime" in assert_one_line_error(code, err)

    code, _, err = _bench(capsys, m0_onnx, sshd, known_hosts, "--accept-new-host-key", python="/nonexistent/python")
    assert "--remote-python" in assert_one_line_error(code, err)
