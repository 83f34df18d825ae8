"""A whole Frugal stack for end-to-end tests, run by the same code as `frugal up`.

Layer: test support (process I/O). Writes a frugal.yaml on free loopback ports,
starts engines, safety filter, control plane and the real Envoy through
frugal.cli's planner and supervisor, and keeps every child's log for failures.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from control_plane.config_file import load_config
from control_plane.model import FrugalConfig
from frugal.bench.ports import PortPicker
from frugal.cli.stack import StackFiles
from frugal.cli.supervisor import Supervisor
from frugal.cli.up import admin_url, start_stack

# Fast, low-jitter profiles: tests drive the path, not the latency model.
FAST = {"a_ms": 2.0, "b_ms": 0.05, "c_ms": 0.001, "max_batch": 64, "jitter": 0.0}


# One picker for the whole test session: a port handed out once (with an engine's
# metrics port, +1000) is never handed out again, so two parts of a stack cannot be
# given the same port before either has bound it.
PORTS = PortPicker()


def free_port(*, with_metrics: bool = False) -> int:
    """A loopback port that is free now (and, for engines, its metrics port too)."""
    return PORTS.take(engine=with_metrics)


def consecutive_free_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports that are all free now."""
    return PORTS.take_consecutive(count)


def replicas(count: int) -> list[str]:
    return [f"127.0.0.1:{free_port(with_metrics=True)}" for _ in range(count)]


def stack_config(
    models: list[dict[str, Any]], profiles: dict[str, Any], **sections: Any
) -> dict[str, Any]:
    return {
        "listener": {"port": free_port(), "max_request_bytes": 64 * 1024},
        "control_plane": {"xds_port": free_port(), "metrics_port": free_port()},
        "envoy": {"admin_port": free_port(), "node_id": "frugal-test"},
        "safety_filter": {"port": free_port(), "metrics_port": free_port()},
        "admin": {"port": free_port()},
        "redis": {"url": f"redis://127.0.0.1:{free_port()}/0", "data_dir": "redis"},
        **sections,
        "profiles": profiles,
        "models": models,
    }


class FrugalStack:
    def __init__(self, directory: Path, data: dict[str, Any]) -> None:
        self.directory = directory
        self.config_path = directory / "frugal.yaml"
        self.config_path.write_text(yaml.safe_dump(data))
        self.config: FrugalConfig = load_config(self.config_path)
        self.files = StackFiles(directory / "var")
        self.api_key = ""
        self.logs: deque[str] = deque(maxlen=4000)
        self.supervisor = Supervisor(sink=lambda name, line: self.logs.append(f"[{name}] {line}"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config.listener.port}"

    @property
    def envoy_admin(self) -> str:
        return f"http://127.0.0.1:{self.config.envoy.admin_port}"

    @property
    def admin_url(self) -> str:
        return admin_url(self.config)

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.files.admin_token.read_text().strip()}"}

    @property
    def auth(self) -> dict[str, str]:
        """Headers that authenticate with the stack's demo key."""
        return {"authorization": f"Bearer {self.api_key}"}

    async def start(self) -> None:
        self.api_key = await start_stack(self.config, self.config_path, self.files, self.supervisor)

    async def stop(self) -> None:
        await self.supervisor.stop()

    def log_text(self) -> str:
        return "\n".join(self.logs)


@contextlib.asynccontextmanager
async def running_stack(directory: Path, data: dict[str, Any]) -> AsyncIterator[FrugalStack]:
    """A started stack for a fixture, stopped on exit; its log printed when the start or
    a test under it fails."""
    stack = FrugalStack(directory, data)
    try:
        await stack.start()
        yield stack
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await stack.stop()


# Marks for a test that starts whole stacks itself: a missing Envoy or redis-server (make
# setup installs both) fails it (tests/conftest.py's stack_binaries), never skips it.
STACK_MARKS = [pytest.mark.e2e, pytest.mark.usefixtures("stack_binaries")]
