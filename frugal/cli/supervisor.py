"""Running the stack's child processes: start in order, forward logs, stop together.

I/O layer. Each child's output is forwarded line by line with its name as a
prefix; if one exits while the stack runs, `wait` returns its name and exit code
so the caller can say which died, and `stop` ends the others (SIGTERM, then
SIGKILL after a grace period), each by its own pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from frugal.cli.stack import ChildSpec

LogSink = Callable[[str, str], None]
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if `frugal up` itself is killed, so none is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def print_sink(name: str, line: str) -> None:
    print(f"[{name}] {line}", flush=True)


def describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


@dataclass
class RunningChild:
    spec: ChildSpec
    process: asyncio.subprocess.Process
    pump: asyncio.Task[None]


class Supervisor:
    def __init__(self, sink: LogSink = print_sink, grace_s: float = 5.0) -> None:
        self._sink = sink
        self._grace_s = grace_s
        self.children: dict[str, RunningChild] = {}

    async def start(self, spec: ChildSpec) -> RunningChild:
        process = await asyncio.create_subprocess_exec(
            *spec.argv,
            env={**os.environ, **spec.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
            # A real fork() (no vfork with a preexec_fn): safe only with gRPC's fork
            # support off, which frugal/cli/__init__.py sees to (grpc/grpc#43055).
            preexec_fn=_die_with_parent,
        )
        pump = asyncio.create_task(self._pump(spec.name, process))
        child = RunningChild(spec, process, pump)
        self.children[spec.name] = child
        return child

    async def _pump(self, name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            self._sink(name, raw.decode(errors="replace").rstrip())

    def dead(self) -> tuple[str, int] | None:
        """The first child that has exited, with its exit code, if any."""
        for name, child in self.children.items():
            if child.process.returncode is not None:
                return name, child.process.returncode
        return None

    async def wait_essential_exit(self) -> tuple[str, int]:
        """Until a child the stack cannot serve without exits; report the others as they go.

        An engine replica that dies is routed around by Envoy (health checks, retries),
        and Envoy keeps its last config without the control plane, so only Envoy and
        the safety filter are essential.
        """
        waits = {
            asyncio.create_task(child.process.wait()): child.spec
            for child in self.children.values()
            if child.process.returncode is None
        }
        while waits:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                spec = waits.pop(task)
                if spec.essential:
                    for other in waits:
                        other.cancel()
                    return spec.name, task.result()
                self._sink("frugal", f"{spec.name} {describe_exit(task.result())}; still serving")
        return "every child", 0

    async def stop(self) -> None:
        """Stop every child: the last started (the front door, Envoy) first, then the rest."""
        children = list(self.children.values())
        if children:
            await self._stop_one(children[-1])
            await asyncio.gather(*(self._stop_one(child) for child in children[:-1]))

    async def _stop_one(self, child: RunningChild) -> None:
        process = child.process
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await child.pump

    async def kill(self, name: str) -> None:
        """SIGKILL one child (fault tests)."""
        child = self.children[name]
        with contextlib.suppress(ProcessLookupError):
            child.process.kill()
        await child.process.wait()
