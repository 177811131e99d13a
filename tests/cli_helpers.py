import subprocess
import sys

import pytest

from evit_export.cli import main


def run_cli(capsys, *args):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def run_cli_process(*args, timeout=600, **kw):
    """Run ``python -m evit_export`` as a real process."""
    return subprocess.run([sys.executable, "-m", "evit_export", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, **kw)


def assert_one_line_error(code, err):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def assert_usage_error(code, err, option, value):
    """A value outside an Enum option's choices: typer's usage error, exit 2, naming both."""
    assert code == 2, err
    assert "Traceback" not in err
    assert f"Invalid value for '{option}'" in err, err
    assert f"'{value}'" in err, err


def pids_where(matches) -> list[int]:
    """pids of this machine's processes whose command line (arguments joined by NUL)
    ``matches(cmdline)`` accepts; processes that end while being read are skipped."""
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if matches(cmd):
                found.append(int(proc.name))
    return found
