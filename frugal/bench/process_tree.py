"""The processes a benchmark started, found under its own pid (I/O layer: /proc).

Every process of a soak run (engines, Envoy, Redis, the control plane, the safety filter
processes) descends from the benchmark's process, whichever supervisor started it; each
is labelled by what its command line runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from frugal.bench.memory_trend import ProcessReading

PROC = Path("/proc")
# What a command line runs -> its label (the first that matches).
KINDS: tuple[tuple[str, str], ...] = (
    ("-m engine_workers", "engine"),
    ("-m safety_filter", "safety_filter"),
    ("-m control_plane", "control_plane"),
    ("redis-server", "redis"),
    ("envoy", "envoy"),
)


def _parent(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after the last `)`.
    return int(stat.rpartition(")")[2].split()[1])


def descendants(root: int) -> list[int]:
    """Pids of every live process below `root`."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (parent := _parent(int(entry.name))) is not None:
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(found)


def label(pid: int) -> str | None:
    """`kind pid` for a process of the stack, None for anything else (a shell, a helper)."""
    try:
        command = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    for marker, kind in KINDS:
        if marker in command:
            return f"{kind} {pid}"
    return None


def reading(pid: int) -> ProcessReading | None:
    """RSS (VmRSS of /proc/PID/status) and open descriptors; None once it is gone."""
    try:
        status = (PROC / str(pid) / "status").read_text()
        fds = len(os.listdir(PROC / str(pid) / "fd"))
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return ProcessReading(int(line.split()[1]) * 1024, fds)
    return None


def stack_readings(root: int | None = None) -> dict[str, ProcessReading]:
    """label -> reading of every stack process below `root` (default: this process)."""
    found = {}
    for pid in descendants(os.getpid() if root is None else root):
        name = label(pid)
        if name is not None and (value := reading(pid)) is not None:
            found[name] = value
    return found
