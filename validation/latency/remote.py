"""Measured latency on a real device over SSH.

The artifact and a self-contained script (remote_bench_script.py) are copied to a
temporary folder on the device, the script runs there with the device's own Python and
runtime, and the folder is removed. SSH is paramiko's (a kept library: host-key
policy and key auth in one place, no parsing of ssh's messages).

Host keys are checked against a known_hosts file (~/.ssh/known_hosts by default): an
unknown host is refused unless ``accept_new_host_key``, which appends its key; a
changed key is always refused. Every failure is one UserError line.
"""
from __future__ import annotations

import getpass
import json
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.validation.latency.measure import Latency
from evit_export.targets import target_for

HARNESS = Path(__file__).with_name("remote_bench_script.py")
_OPENER_MARKER = "# @@OPEN_MODEL@@"
_HOST = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s]+)(?::(?P<port>\d+))?$")
# Exit statuses of remote_bench_script.py.
_MISSING_RUNTIME, _CANNOT_RUN, _NO_COMMAND = 3, 4, 127


@dataclass(frozen=True)
class RemoteHost:
    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, text: str) -> "RemoteHost":
        match = _HOST.match(text.strip())
        if not match:
            raise UserError(f"--remote {text!r} is not [USER@]HOST[:PORT]")
        return cls(match["user"] or getpass.getuser(), match["host"].strip("[]"), int(match["port"] or 22))

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def _paramiko():
    try:
        import paramiko
    except ImportError:
        raise UserError("--remote needs paramiko on this machine: pip install 'evit-export[remote]'") from None
    return paramiko


def _host_key_policy(paramiko, known_hosts: Path, accept_new: bool):
    class Policy(paramiko.MissingHostKeyPolicy):
        """Unknown host: refuse, or (accept_new) append its key to known_hosts."""

        def missing_host_key(self, client, hostname, key):
            if not accept_new:
                raise UserError(f"host key of {hostname} is not in {known_hosts}: check its fingerprint "
                                f"({key.get_name()} {key.fingerprint}) and rerun with --accept-new-host-key")
            known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with open(known_hosts, "a", encoding="utf-8") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            client.get_host_keys().add(hostname, key.get_name(), key)
    return Policy()


def connect(target: RemoteHost, identity: Path | None, known_hosts: Path, accept_new: bool, timeout: float = 10.0):
    """An SSH client connected to ``target`` with its host key checked."""
    paramiko = _paramiko()
    client = paramiko.SSHClient()
    if known_hosts.is_file():
        client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(_host_key_policy(paramiko, known_hosts, accept_new))
    if identity is not None and not Path(identity).is_file():
        raise UserError(f"--identity {identity} does not exist: pass the private key file")
    try:
        client.connect(target.host, port=target.port, username=target.user,
                       key_filename=str(identity) if identity else None, look_for_keys=identity is None,
                       allow_agent=identity is None, timeout=timeout, banner_timeout=timeout, auth_timeout=timeout)
    except paramiko.BadHostKeyException:
        client.close()
        raise UserError(f"host key of {target.host} has CHANGED since it was recorded in {known_hosts}: "
                        "refusing to connect (remove the old entry only if you know why it changed)") from None
    except paramiko.AuthenticationException:
        client.close()
        raise UserError(f"authentication to {target} refused: check the user and --identity key") from None
    except UserError:  # from the host-key policy
        client.close()
        raise
    except (OSError, paramiko.SSHException) as e:
        client.close()
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot reach {target}: {reason}") from None
    return client


def _run(client, command: str, timeout: float) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out, err = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    return stdout.channel.recv_exit_status(), out, err


def _upload(client, folder: str, paths: list[Path], timeout: float) -> None:
    """Copy files and folders (an .mlpackage is a folder) into ``folder`` as one tar
    stream into the device's ``tar``: no SFTP subsystem needed (many devices lack it)."""
    import tarfile
    import tempfile

    with tempfile.TemporaryFile() as buf:
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path in paths:
                tar.add(str(path), arcname=path.name)
        buf.seek(0)
        stdin, stdout, stderr = client.exec_command(f"tar -xf - -C {shlex.quote(folder)}", timeout=timeout)
        while chunk := buf.read(1 << 20):
            stdin.write(chunk)
        stdin.channel.shutdown_write()
        if stdout.channel.recv_exit_status():
            raise UserError(f"copying to the device failed: {stderr.read().decode(errors='replace').strip()}")


def remote_script(artifact: Path) -> str:
    """The harness with the artifact's format's ``open_model`` inserted: one self-contained
    script for the device."""

    target = target_for(artifact, runnable=True)
    opener = target.remote_bench_source()
    if opener is None:
        raise UserError(f"{target.title or target.name} artifacts cannot be measured on a remote device yet: "
                        "measure them on this machine (bench without --remote)")
    return HARNESS.read_text(encoding="utf-8").replace(_OPENER_MARKER, opener)


def bench_remote(artifact: Path, target: RemoteHost, *, identity: Path | None = None,
                 remote_python: str = "python3", threads: int | None = 1, iterations: int = 30, batch: int = 1,
                 accept_new_host_key: bool = False, known_hosts: Path | None = None,
                 timeout: float = 600.0) -> Latency:
    """Median latency of ``artifact`` measured on ``target`` with its own runtime."""
    import tempfile

    known_hosts = Path(known_hosts or Path.home() / ".ssh" / "known_hosts")
    script_text = remote_script(Path(artifact))
    client = connect(target, identity, known_hosts, accept_new_host_key)
    try:
        code, folder, err = _run(client, "mktemp -d", 30)
        folder = folder.strip()
        if code or not folder:
            raise UserError(f"cannot create a temporary folder on {target.host}: {err.strip() or 'mktemp failed'}")
        try:
            with tempfile.TemporaryDirectory() as scratch:
                script = Path(scratch) / HARNESS.name
                script.write_text(script_text, encoding="utf-8")
                _upload(client, folder, [script, Path(artifact)], timeout)
            command = " ".join(shlex.quote(a) for a in (
                remote_python, f"{folder}/{HARNESS.name}", f"{folder}/{Path(artifact).name}",
                "--threads", str(threads or 0), "--iterations", str(iterations), "--batch", str(batch)))
            code, out, err = _run(client, command, timeout)
        finally:
            _run(client, f"rm -rf {shlex.quote(folder)}", 30)
    except socket.timeout:
        raise UserError(f"the measurement on {target.host} took longer than {timeout:.0f} s") from None
    except (OSError, _paramiko().SSHException) as e:
        raise UserError(f"the connection to {target.host} broke off: {str(e) or type(e).__name__}") from None
    finally:
        client.close()
    return _parse_result(code, out, err, target, remote_python)


def _parse_result(code: int, out: str, err: str, target: RemoteHost, remote_python: str) -> Latency:
    if code == _NO_COMMAND:
        raise UserError(f"{remote_python} was not found on {target.host}: pass --remote-python PATH")
    try:
        result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    except ValueError:
        result = {}
    if code == _MISSING_RUNTIME:
        raise UserError(f"the runtime is missing on {target.host} for {remote_python}: "
                        f"pip install {result.get('package', 'onnxruntime')} there")
    if code or "median_ms" not in result:
        reason = result.get("error") or (err.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"the measurement on {target.host} failed: {reason}")
    median = float(result["median_ms"])
    return Latency(runtime=f"{result['runtime']} (remote)", batch=int(result.get("batch") or 1),
                   threads=result.get("threads"), median_ms=median, p90_ms=float(result["p90_ms"]),
                   min_ms=float(result["min_ms"]), images_per_s=round(int(result.get("batch") or 1) / median * 1e3, 1),
                   iterations=int(result["iterations"]), kind="measured",
                   machine=f"remote {target.host}:{target.port}: {result['machine']}",
                   # .get: an older harness on the device may not report these yet
                   p50_ms=result.get("p50_ms", median), p99_ms=result.get("p99_ms"),
                   load_ms=result.get("load_ms"), first_ms=result.get("first_ms"),
                   peak_rss_bytes=result.get("peak_rss_bytes"), memory=result.get("memory") or {})
