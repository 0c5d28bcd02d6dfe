"""What the benchmarks share: the peak-memory probe and the child process it runs in.

Memory on CPU is the rise of the peak resident set (VmHWM, reset through /proc/self/clear_refs) over one call,
in a child process whose glibc mmap threshold is pinned so that freed buffers go back to the OS (else the
peak would hold buffers freed long ago). The pinned threshold makes every large allocation a fresh mmap, which
distorts timings: time and memory are measured in different processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
MMAP_THRESHOLD = 1 << 16


def status_kib(key: str) -> int:
    """A ``/proc/self/status`` entry (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


def peak_rise_mib(call: Callable[[], Any]) -> float:
    """MiB by which the peak resident set rises above the current one while `call()` runs."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current RSS
    base = status_kib("VmRSS")
    call()
    return (status_kib("VmHWM") - base) / 1024


def run_child(module: str, args: list[str]) -> Any:
    """Run ``python -m <module> <args>`` from the repository root with the pinned mmap threshold; the JSON
    value it prints on its last line."""
    child = subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, MMAP_ENV: str(MMAP_THRESHOLD)},
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def command_line(module: str, argv: list[str]) -> str:
    """The command that reproduces a run, as recorded in its results."""
    return " ".join(["python -m", module, *argv])
