"""One real stack (Envoy + control plane + safety filter + sim engines) for the e2e tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from frugal.cli.stack import find_envoy
from tests.helpers.stack import FAST, FrugalStack, replicas, stack_config


def _require_envoy() -> None:
    try:
        find_envoy()
    except FileNotFoundError as error:
        pytest.fail(f"{error}: the e2e tests need the real Envoy")


@pytest.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    _require_envoy()
    models: list[dict[str, Any]] = [
        {"name": "sim-echo", "echo": True, "groups": [
            {"name": "echo", "profile": "fast", "replicas": replicas(1)}]},
        {"name": "sim-mixtral", "groups": [
            {"name": "tp8", "profile": "fast", "weight": 50, "replicas": replicas(1)},
            {"name": "tp2", "profile": "fast", "weight": 50, "replicas": replicas(2)}]},
        {"name": "sim-slow", "groups": [
            {"name": "slow", "profile": "slow", "replicas": replicas(1)}]},
        {"name": "sim-faulty", "groups": [
            {"name": "faulty", "profile": "faulty", "replicas": replicas(1)}]},
    ]  # fmt: skip
    profiles = {
        "fast": FAST,
        # ~20 ms a token: long enough for a client to leave mid-stream.
        "slow": {**FAST, "a_ms": 20.0, "output_tokens_min": 400, "output_tokens_max": 400},
        "faulty": {**FAST, "fault_after_tokens": 3},
    }
    running = FrugalStack(Path(tmp_path_factory.mktemp("stack")), stack_config(models, profiles))
    try:
        await running.start()
    except BaseException:
        await running.stop()
        print(running.log_text())
        raise
    yield running
    await running.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    running = item.funcargs.get("stack") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(running, FrugalStack):
        report.sections.append(("stack log (last lines)", "\n".join(list(running.logs)[-150:])))
