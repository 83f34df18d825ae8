"""One small real stack (Envoy, control plane, safety filter, a sim engine, Redis) for the
public API's fuzz and hostile-input tests, with an API key without limits: a fuzz run
sends far more requests a minute than any key's rpm would allow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.stack import FAST, FrugalStack, replicas, running_stack, stack_config

MODEL = "sim-echo"
# The body cap the hostile-input tests probe (frugal.yaml's default): a 200 KB prompt is
# under it.
MAX_REQUEST_BYTES = 1 << 20


@dataclass(frozen=True)
class Gateway:
    stack: FrugalStack
    key: str  # no rpm or tpm limit

    @property
    def url(self) -> str:
        return self.stack.base_url

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}


def fuzz_stack(
    directory: Path, models: list[dict[str, Any]]
) -> AbstractAsyncContextManager[FrugalStack]:
    """A running stack of `models` with the hostile-input tests' body cap."""
    config = stack_config(models, {"fast": FAST})
    config["listener"]["max_request_bytes"] = MAX_REQUEST_BYTES
    return running_stack(directory, config)


def echo_model() -> dict[str, Any]:
    return {
        "name": MODEL,
        "echo": True,
        "groups": [{"name": "echo", "profile": "fast", "replicas": replicas(1)}],
    }


@pytest.fixture(scope="session")
async def gateway(
    tmp_path_factory: pytest.TempPathFactory, stack_binaries: None
) -> AsyncIterator[Gateway]:
    async with fuzz_stack(Path(tmp_path_factory.mktemp("fuzz-stack")), [echo_model()]) as running:
        async with httpx.AsyncClient(base_url=running.admin_url) as admin:
            spec = {"name": "fuzz", "tenant": "fuzz"}
            created = await admin.post("/admin/v1/keys", json=spec, headers=running.admin_headers)
        assert created.status_code == 201, created.text
        yield Gateway(running, created.json()["key"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    funcargs = getattr(item, "funcargs", {})
    running = next((v for v in funcargs.values() if isinstance(v, FrugalStack)), None)
    found = funcargs.get("gateway")
    running = found.stack if isinstance(found, Gateway) else running
    if report.failed and running is not None:
        report.sections.append(("stack log (last lines)", "\n".join(list(running.logs)[-150:])))
