"""What this machine is, read once for every figure that must say where it was measured:
the CPU's name and the SIMD extensions that decide kernel speed (AVX2, AVX-512, VNNI,
AMX on x86; NEON/ASIMD on Arm). The remote bench harness has its own copy on purpose:
it runs on devices where evit-export is not installed."""
from __future__ import annotations

import os
import platform
from functools import cache

# Flag prefixes that change which kernels a runtime picks.
SPEED_FLAG_PREFIXES = ("avx", "amx", "fma", "sse4", "vnni", "neon", "asimd")


@cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags() -> list[str]:
    """The CPU's speed-relevant SIMD flags, sorted (empty when the OS does not say)."""
    info = _cpuinfo()
    words = (info.get("flags") or info.get("Features") or "").split()
    return sorted({w for w in words if w.startswith(SPEED_FLAG_PREFIXES)})


def cpu_name() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("Hardware") or platform.processor() or platform.machine()


def machine_description() -> str:
    """``AMD EPYC 9B14, 2 cores, Linux``: printed and recorded beside measured figures."""
    return f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}"
