"""Fixtures shared by every test layer."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

# Before any test module loads grpc: this process starts children (frugal/cli/__init__.py).
import frugal.cli  # noqa: F401
from frugal.cli.stack import find_envoy
from tests.helpers.redis_server import RedisServer


@pytest.fixture(scope="session")
def stack_binaries() -> None:
    """Envoy and redis-server, which tests that run them need: missing, the run fails (a
    fresh clone's CI would otherwise pass without ever starting them)."""
    try:
        find_envoy()
    except FileNotFoundError as error:
        pytest.fail(f"{error}: this test needs the real Envoy")
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `make setup`")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session; tests that need a clean one call flush()."""
    server = RedisServer()
    yield server
    server.stop()
