"""What a running stack's processes hold and count (test support, I/O): open file
descriptors from /proc, and Prometheus samples from a /metrics page."""

from __future__ import annotations

import os
import re
import signal

import httpx

from tests.helpers.stack import FrugalStack


def open_fds(pid: int) -> int:
    """How many file descriptors the process has open now (Linux /proc)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def stack_pids(stack: FrugalStack) -> dict[str, int]:
    """The pid of every child of the stack that still runs, by child name."""
    return {
        name: child.process.pid
        for name, child in stack.supervisor.children.items()
        if child.process.returncode is None
    }


def freeze(stack: FrugalStack, name: str) -> None:
    """SIGSTOP one child: it keeps its sockets open but answers nothing until `thaw`."""
    os.kill(stack.supervisor.children[name].process.pid, signal.SIGSTOP)


def thaw(stack: FrugalStack, name: str) -> None:
    os.kill(stack.supervisor.children[name].process.pid, signal.SIGCONT)


async def metric_sum(port: int, name: str) -> float:
    """The sum of every sample named `name` (any labels) on 127.0.0.1:`port`/metrics."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    found = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    return sum(float(value) for value in found)
