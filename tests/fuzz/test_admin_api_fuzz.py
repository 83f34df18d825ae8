"""The admin REST fuzzed with schemathesis from its own OpenAPI document, on the real control
plane of a stack of its own (the fuzz creates keys, sets policies and asks to drain replicas).

Without the admin token every API route answers 401, whatever is sent; with it nothing
answers 5xx and every error is OpenAI-shaped. FRUGAL_FUZZ_EXAMPLES (1,000 by default)
scales the examples per operation (one fiftieth of it, at least 10).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from tests.fuzz.answers import openai_error
from tests.fuzz.conftest import echo_model, fuzz_stack
from tests.fuzz.test_public_api_fuzz import PHASES
from tests.helpers.stack import STACK_MARKS, FrugalStack

pytestmark = STACK_MARKS

EXAMPLES = max(10, int(os.environ.get("FRUGAL_FUZZ_EXAMPLES", "1000")) // 50)
API_PREFIX = "/admin/v1/"


@pytest.fixture(scope="module")
async def admin_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    async with fuzz_stack(Path(tmp_path_factory.mktemp("admin-fuzz")), [echo_model()]) as running:
        yield running


def _fuzz(
    stack: FrugalStack,
    headers: dict[str, str] | None,
    check: Callable[[Any, httpx.Response | Any], None],
) -> Counter[tuple[str, int]]:
    """Send EXAMPLES valid and EXAMPLES invalid requests to every operation; the statuses."""
    schema = schemathesis.openapi.from_url(stack.admin_url + "/admin/openapi.json")
    statuses: Counter[tuple[str, int]] = Counter()
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), results
    assert all(op.path.startswith(API_PREFIX) for op in operations)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                phases=PHASES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(operation.as_strategy(generation_mode=mode))
            def send(case: Any) -> None:
                response = case.call(base_url=stack.admin_url, headers=headers, timeout=30)
                statuses[(f"{case.method} {case.path}", response.status_code)] += 1
                check(case, response)

            send()
    return statuses


def _report(
    capsys: pytest.CaptureFixture[str], label: str, statuses: Counter[Any], seconds: float
) -> None:
    by_status = Counter[int]()
    for (_, status), count in statuses.items():
        by_status[status] += count
    with capsys.disabled():
        print(
            f"\nadmin fuzz {label}: {sum(statuses.values())} requests in {seconds:.1f} s, "
            f"statuses {dict(sorted(by_status.items()))}"
        )


def test_without_the_token_every_route_is_401(
    admin_stack: FrugalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    def check(case: Any, response: Any) -> None:
        # schemathesis sends no Authorization header, or a generated (wrong) bearer token.
        assert response.status_code == 401, f"{case.method} {case.formatted_path}: {response.text}"
        assert openai_error(response)["code"] == "invalid_admin_token"

    started = time.perf_counter()
    statuses = _fuzz(admin_stack, None, check)
    _report(capsys, "without the token", statuses, time.perf_counter() - started)


def test_with_the_token_nothing_is_a_server_error(
    admin_stack: FrugalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    def check(case: Any, response: Any) -> None:
        sent = f"{case.method} {case.formatted_path} {case.query} {case.body!r:.300}"
        assert response.status_code < 500, f"{sent}: {response.text}"
        if response.status_code >= 400:
            openai_error(response)

    started = time.perf_counter()
    statuses = _fuzz(admin_stack, admin_stack.admin_headers, check)
    _report(capsys, "with the token", statuses, time.perf_counter() - started)
    assert any(200 <= status < 300 for _, status in statuses), statuses
