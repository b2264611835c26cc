"""This machine as the engine and the benchmark see it: the CPU's name and flags, the cores this process may
use, and the process's peak memory."""
from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path


def cpu_info() -> dict[str, str]:
    """The fields of /proc/cpuinfo ("model name", "flags", ...), each as it first appears; {} without one."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    return cpu_info().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    return set(cpu_info().get("flags", "").split())


def usable_cores() -> int:
    """Cores this process may run on (its affinity), not every core of the machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb if sys.platform == "darwin" else kb * 1024)


def available_memory_bytes() -> int:
    """MemAvailable (Linux), 0 where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
