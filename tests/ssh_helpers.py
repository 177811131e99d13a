"""Real OpenSSH servers on loopback for tests: each from a temporary config (host key,
authorized keys, pid file in a temp folder), as root (sshd refuses otherwise). Tests
that use them skip with a reason when sshd is missing or the user is not root."""
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
NEEDS_SSHD = [
    pytest.mark.skipif(not Path(SSHD).exists(),
                       reason="OpenSSH sshd is not installed (apt-get install openssh-server)"),
    pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                       reason="sshd on loopback from a temporary config needs root (CI runs as root)"),
]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoopbackSSH:
    """One running sshd: its port, the folder of its files, its host public key."""
    port: int
    folder: Path
    process: subprocess.Popen

    @property
    def host_pub(self) -> Path:
        return self.folder / "host_key.pub"

    def known_hosts_line(self) -> str:
        kind, key = self.host_pub.read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {key}\n"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _wait_for_port(port: int, proc, log: Path, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {log.read_text() if log.exists() else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail("sshd did not start listening")


def start_sshd(folder: Path, authorized_keys: list[Path]) -> LoopbackSSH:
    """sshd on 127.0.0.1 at a free port, accepting root logins with ``authorized_keys``
    (public key files) only."""
    folder.mkdir(parents=True, exist_ok=True)
    host_key = keygen(folder / "host_key")
    (folder / "authorized_keys").write_text("".join(Path(k).read_text() for k in authorized_keys))
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
                      f"AuthorizedKeysFile {folder / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
                      f"PidFile {folder / 'sshd.pid'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                      "PermitRootLogin prohibit-password\n")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    log = folder / "sshd.log"
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(log)])
    try:
        _wait_for_port(port, proc, log)
    except BaseException:
        proc.kill()
        raise
    return LoopbackSSH(port, folder, proc)
