"""Children started by the supervisor while gRPC is busy in the parent all reach exec.

A launcher's process has gRPC loaded (frugal up's load sampler, the benchmarks' drivers,
the test process); frugal/cli/__init__.py says why gRPC's fork handlers would abort some
children before exec. Run in a fresh interpreter, as the `frugal` command is.
"""

from __future__ import annotations

import os
import subprocess
import sys

CHILDREN = 150
PROBE = f"""
import asyncio
import frugal.cli.supervisor as supervisor
import grpc
from frugal.cli.stack import ChildSpec

async def main() -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{{port}}")
    running = supervisor.Supervisor(sink=lambda name, line: None)
    codes = []
    for i in range({CHILDREN}):
        child = await running.start(ChildSpec(name=f"c{{i}}", argv=("/bin/true",)))
        codes.append(await child.process.wait())
    await channel.close()
    await server.stop(None)
    print(sorted(set(codes)))

asyncio.run(main())
"""


def test_no_child_dies_before_exec() -> None:
    # The test process has switched fork support off already; the probe must do it itself.
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert probe.stdout.strip() == "[0]", probe.stderr[-2000:]
