"""The processes a benchmark started, found under its own pid (I/O layer: /proc).

Every process of a soak run (engines, Envoy, Redis, the control plane, the safety filter
processes) descends from the benchmark's process, whichever supervisor started it; each
is labelled by what its command line runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Set as AbstractSet
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


def tcp_sockets_on(port: int) -> set[int]:
    """Inodes of the loopback host's TCP sockets with `port` at either end (/proc/net/tcp
    and tcp6: `local_address rem_address` as HEX_IP:HEX_PORT, the inode in column 10)."""
    found = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                ends = (
                    int(fields[1].rpartition(":")[2], 16),
                    int(fields[2].rpartition(":")[2], 16),
                )
                if port in ends:
                    found.add(int(fields[9]))
    return found


def reading(pid: int, redis_sockets: AbstractSet[int] = frozenset()) -> ProcessReading | None:
    """RSS (VmRSS of /proc/PID/status), open descriptors and how many of them are among
    `redis_sockets`; None once it is gone."""
    try:
        status = (PROC / str(pid) / "status").read_text()
        fd_dir = PROC / str(pid) / "fd"
        links = []
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                links.append(os.readlink(fd_dir / fd))
    except OSError:
        return None
    redis = sum(
        1 for link in links if link.startswith("socket:[") and int(link[8:-1]) in redis_sockets
    )
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return ProcessReading(int(line.split()[1]) * 1024, len(links), redis)
    return None


def stack_readings(
    root: int | None = None, redis_port: int | None = None
) -> dict[str, ProcessReading]:
    """label -> reading of every stack process below `root` (default: this process), with
    its connections to or from `redis_port` counted apart."""
    sockets = tcp_sockets_on(redis_port) if redis_port is not None else set()
    found = {}
    for pid in descendants(os.getpid() if root is None else root):
        name = label(pid)
        if name is not None and (value := reading(pid, sockets)) is not None:
            found[name] = value
    return found
