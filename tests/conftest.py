"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# Before any test module loads grpc: this process starts children (frugal/cli/__init__.py).
import frugal.cli  # noqa: F401
from tests.helpers.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session; tests that need a clean one call flush()."""
    server = RedisServer()
    yield server
    server.stop()
