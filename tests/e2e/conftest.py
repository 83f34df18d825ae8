"""One real stack (Envoy + control plane + safety filter + sim engines) for the e2e tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.stack import FAST, FrugalStack, replicas, running_stack, stack_config

CONTENT_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "content"
BLOCKLIST = [
    line.strip()
    for line in (CONTENT_FIXTURES / "blocklist.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
RAW_OUTPUT_REDACTED = {
    "detectors": [
        "EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "SECRET", "BLOCKLIST",
    ],
    "prompt_action": "log",
    "output_action": "redact",
    "blocklist": BLOCKLIST,
}  # fmt: skip


@pytest.fixture(scope="session")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, stack_binaries: None
) -> AsyncIterator[FrugalStack]:
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
        # Prompts pass unchanged (log), so only the output check stands between a
        # sensitive echo and the client; sub-word pieces split it across many events.
        {"name": "sim-echo-raw", "echo": True, "content_policy": RAW_OUTPUT_REDACTED,
         "groups": [{"name": "raw", "profile": "subword", "replicas": replicas(1)}]},
        {"name": "sim-echo-guarded", "echo": True,
         "content_policy": {"prompt_action": "log", "output_action": "block"},
         "groups": [{"name": "guarded", "profile": "subword", "replicas": replicas(1)}]},
        {"name": "sim-echo-strict", "echo": True,
         "content_policy": {"prompt_action": "block", "output_action": "block"},
         "groups": [{"name": "strict", "profile": "fast", "replicas": replicas(1)}]},
    ]  # fmt: skip
    profiles = {
        "fast": FAST,
        # ~20 ms a token: long enough for a client to leave mid-stream.
        "slow": {**FAST, "a_ms": 20.0, "output_tokens_min": 400, "output_tokens_max": 400},
        "faulty": {**FAST, "fault_after_tokens": 3},
        "subword": {**FAST, "subword_max_chars": 4},
    }
    directory = Path(tmp_path_factory.mktemp("stack"))
    async with running_stack(directory, stack_config(models, profiles)) as running:
        yield running


E2E_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs the real Envoy, and the `e2e` marker says so (`-m "not e2e"`
    leaves them out); a test elsewhere that needs Envoy belongs here."""
    for item in items:
        if item.path.is_relative_to(E2E_TESTS):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    running = item.funcargs.get("stack") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(running, FrugalStack):
        report.sections.append(("stack log (last lines)", "\n".join(list(running.logs)[-150:])))
