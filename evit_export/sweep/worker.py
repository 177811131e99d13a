"""One sweep cell in its own process: ``python -m evit_export.sweep.worker REQUEST.json
RESULT.json``.

Each cell runs in a fresh interpreter so that a native crash (a segfault in a converter
or runtime) takes down that cell only, and so that TensorFlow and torch load in a safe
order in every cell. The worker dies with the sweep (``core.isolation.die_with_parent``),
so a killed sweep leaves no orphan writing into its folder.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from evit_export.core.isolation import die_with_parent
from evit_export.core.jsonio import loads_strict, write_json_atomic

PARENT_ENV = "EVIT_SWEEP_PARENT"  # the sweep's pid, so a worker started after its death stops at once


def main(argv: list[str] | None = None) -> int:
    expected = os.environ.get(PARENT_ENV)
    die_with_parent(int(expected) if expected else None)
    # Only now the stages (torch, the targets): seconds of imports during which a killed
    # sweep would otherwise leave this process running on.
    from evit_export.sweep.stages import run_stages

    request_path, result_path = (argv or sys.argv[1:])[:2]
    request = loads_strict(Path(request_path).read_text(encoding="utf-8"))
    threads = request["config"].get("worker_threads")
    if threads:
        import torch  # heavy: only when the sweep pins the worker's threads

        torch.set_num_threads(threads)
    record = run_stages(request["record"], request["stages"], request["config"], Path(request["out_dir"]),
                        request["fingerprints"])
    write_json_atomic(result_path, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
