"""``sweep --fleet fleet.toml``: two "devices" are two real OpenSSH servers on loopback
ports; the sweep measures its cell on both, concurrently, with host keys checked as
``bench --remote`` does; a third device that refuses the key gives one failed figure,
not a failed sweep; a re-run keeps the figures."""
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli
from ssh_helpers import NEEDS_SSHD, keygen, start_sshd

from evit_export.core.jsonio import loads_strict

pytestmark = [*NEEDS_SSHD, pytest.mark.integration]
SMALL = ["--variants", "m0", "--targets", "onnx", "--precisions", "fp32", "--img-size", "64"]


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    d = tmp_path_factory.mktemp("fleet")
    key, other = keygen(d / "client_key"), keygen(d / "other_key")
    servers = [start_sshd(d / f"sshd{i}", [key.with_suffix(".pub")]) for i in range(2)]
    try:
        yield {"servers": servers, "key": key, "other_key": other, "dir": d}
    finally:
        for s in servers:
            s.stop()


def fleet_toml(path: Path, devices, known_hosts: Path) -> Path:
    entries = []
    for name, server, key in (("alpha", devices["servers"][0], devices["key"]),
                              ("beta", devices["servers"][1], devices["key"]),
                              ("gamma", devices["servers"][1], devices["other_key"])):  # key not authorised
        entries.append(f'[[device]]\nname = "{name}"\nhost = "root@127.0.0.1:{server.port}"\n'
                       f'identity = "{key}"\npython = "{sys.executable}"\nformats = ["onnx"]\n'
                       f'iterations = 10\nknown_hosts = "{known_hosts}"\n')
    path.write_text("\n".join(entries))
    return path


def test_fleet_measures_on_every_device(devices, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(s.known_hosts_line() for s in devices["servers"]))
    fleet = fleet_toml(tmp_path / "fleet.toml", devices, known_hosts)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "evit_export", "sweep", *SMALL, "--fleet", str(fleet), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = loads_strict((out / "results.json").read_text())
    assert set(results["fleet"]) == {"alpha", "beta", "gamma"}
    assert "identity" not in str(results["fleet"])  # no key path of this machine recorded
    (cell,) = results["cells"]
    assert cell["verdict"] == "pass"
    figures = cell["fleet"]
    for name, server in (("alpha", devices["servers"][0]), ("beta", devices["servers"][1])):
        assert figures[name]["kind"] == "measured", figures[name]
        assert figures[name]["median_ms"] > 0, figures[name]
        assert f"remote 127.0.0.1:{server.port}" in figures[name]["machine"]
    # Devices work at once: the two figures' time spans overlap.
    a, b = figures["alpha"], figures["beta"]
    assert a["started_at"] < b["finished_at"]
    assert b["started_at"] < a["finished_at"]
    assert figures["gamma"]["kind"] == "failed"
    assert "authentication" in figures["gamma"]["error"]
    assert "\n" not in figures["gamma"]["error"]
    # The report draws each fleet device's measured points in a plot of its own (or one combined plot).
    report = (out / "report.html").read_text()
    for name in ("alpha", "beta"):
        assert f"fleet:{name}" in report, name  # its plot's data-device(s), or its row of the combined plot
    assert "fleet:gamma" not in report  # no figure measured there: no plot, no row

    # A re-run keeps the measured figures and tries the failed one again.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = loads_strict((out / "results.json").read_text())["cells"][0]["fleet"]
    assert again["alpha"] == a
    assert again["beta"] == b
    assert again["gamma"]["finished_at"] > figures["gamma"]["finished_at"]

    # Host keys as bench --remote: a host not in known_hosts is refused, per device.
    known_hosts.write_text(devices["servers"][0].known_hosts_line())
    (out / "results.json").write_text((out / "results.json").read_text().replace(a["fingerprint"], "changed"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    third = loads_strict((out / "results.json").read_text())["cells"][0]["fleet"]
    assert third["alpha"]["median_ms"] > 0
    assert third["alpha"]["finished_at"] > a["finished_at"]
    assert third["beta"] == b  # kept: its figure was not invalidated
    assert "--accept-new-host-key" in third["gamma"]["error"]


def test_bad_fleet_files_are_one_line_errors(capsys, tmp_path):
    cases = [("", "lists no devices"), ("[[device]]\nname = 'x'\nhost = 'h'\n", "give formats"),
             ("[[device]]\nname = 'x'\nhost = 'h'\nformats = ['nope']\n", "unknown format"),
             ("[[device]]\nname = 'x'\nhost = 'h'\nformats = ['onnx']\ncolour = 1\n", "unknown key"),
             ("[[device\n", "not valid TOML")]
    for text, expected in cases:
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(text)
        code, _, err = run_cli(capsys, "sweep", *SMALL, "--fleet", fleet, "--out", tmp_path / "o")
        assert expected in assert_one_line_error(code, err), text
    code, _, err = run_cli(capsys, "sweep", *SMALL, "--fleet", tmp_path / "none.toml", "--out", tmp_path / "o")
    assert "does not exist" in assert_one_line_error(code, err)
