"""The public API fuzzed through the real Envoy from its OpenAPI document (schemathesis).

Valid and invalid requests are generated from docs/api/openapi.yaml (narrowed to the
stack's model) and sent through the whole chain. Every answer: no 5xx (the stack is up: a
fail-closed 503 may only come from a check that did not answer in time on a busy machine,
and then the same request sent again is answered), a documented status, a body that
conforms to the document (a stream event by event), an OpenAI-shaped error with a
message; a valid request is answered 200, an invalid body or a missing key is refused with
a 4xx; a stream ends with `data: [DONE]` or an error event.

FRUGAL_FUZZ_EXAMPLES sets how many requests (1,000 by default, what CI runs); the long run:
`FRUGAL_FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest tests/fuzz/test_public_api_fuzz.py -s`
(the admin fuzz scales with the same variable).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.parameters import ParameterLocation

from tests.fuzz.answers import assert_stream_finished, openai_error
from tests.fuzz.conftest import MODEL, Gateway
from tests.helpers.openapi_document import body_is_invalid, for_models, load
from tests.helpers.stack import STACK_MARKS

pytestmark = STACK_MARKS

BUDGET = int(os.environ.get("FRUGAL_FUZZ_EXAMPLES", "1000"))
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
# (path, method, mode, share of the budget, whether the key is generated too). With the
# stack's key fixed, an invalid request breaks its body (or is random bytes); the rows that
# generate the key too mostly break it (a missing or malformed Authorization header). The
# model routes have one valid case each (the stack serves one model) and /v1/models none
# to break, so they get one example.
PLAN = [
    ("/v1/chat/completions", "POST", POSITIVE, 0.30, False),
    ("/v1/chat/completions", "POST", NEGATIVE, 0.20, False),
    ("/v1/chat/completions", "POST", NEGATIVE, 0.05, True),
    ("/v1/completions", "POST", POSITIVE, 0.20, False),
    ("/v1/completions", "POST", NEGATIVE, 0.15, False),
    ("/v1/models/{model}", "GET", NEGATIVE, 0.10, True),
    ("/v1/models/{model}", "GET", POSITIVE, 0.0, True),
    ("/v1/models", "GET", POSITIVE, 0.0, True),
]
SCHEMA = load(for_models([MODEL]))
# schemathesis stops reading an event stream after 20 data events (its default) and keeps
# what it read as the body: an echoed prompt's longer stream then looked like one that had
# ended without `[DONE]` (Envoy's log: the client left, flag DC). Every stream is read to
# its end; one still cut short (by the request's timeout) fails as such.
SCHEMA.config.max_stream_events = 1_000_000
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
# No shrinking: each step is a request through the whole stack (a failure once took six
# minutes to shrink); the failing request is in the assertion's message.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate]


def _auth_broken(case: Any) -> bool:
    headers = case.meta.components.get(ParameterLocation.HEADER)
    return headers is not None and headers.mode == NEGATIVE


def check_answer(case: Any, response: Any, mode: GenerationMode) -> None:
    status = response.status_code
    sent = f"{case.meta.phase.data.description}: {case.body!r:.600}"
    assert status < 500, f"{status}: {response.text} for {sent}"
    case.validate_response(response, checks=CHECKS)
    if status >= 400:
        openai_error(response)
    elif response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        # SSE is UTF-8 (a text/* body without a charset would be read as Latin-1).
        assert not response.stream_cut_short, f"stream read only in part, for {sent}"
        events = response.content.decode()
        assert_stream_finished(events, f"{response.elapsed:.2f} s, for {sent}")
    if mode == POSITIVE:
        assert status == 200, f"{response.text} for {sent}"
    elif _auth_broken(case) and case.operation.method.upper() == "POST":
        assert status == 401, f"{response.text} for {sent}"
    elif body_is_invalid(case):
        assert 400 <= status < 500, f"{response.text} for {sent}"


@pytest.mark.parametrize(("path", "method", "mode", "share", "any_key"), PLAN)
def test_generated_requests_through_envoy(
    gateway: Gateway,
    capsys: pytest.CaptureFixture[str],
    path: str,
    method: str,
    mode: GenerationMode,
    share: float,
    any_key: bool,
) -> None:
    examples = max(1, round(BUDGET * share))
    statuses: Counter[int] = Counter()

    key = {"Authorization": gateway.auth["authorization"]}
    operation = SCHEMA[path][method]
    strategy = operation.as_strategy(generation_mode=mode, headers=None if any_key else key)

    @settings(
        max_examples=examples,
        phases=PHASES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def send(case: Any) -> None:
        # The stack's key, unless the case is about a missing or wrong one.
        headers = None if _auth_broken(case) else key
        response = case.call(base_url=gateway.url, headers=headers, timeout=60)
        statuses[response.status_code] += 1
        if response.status_code == 503:
            # Fail closed is documented, for a dependency that did not answer; a request
            # answered 503 for what it is would get it again.
            time.sleep(1.0)  # the answer's retry-after
            response = case.call(base_url=gateway.url, headers=headers, timeout=60)
            statuses[response.status_code] += 1
        check_answer(case, response, mode)

    started = time.perf_counter()
    send()
    elapsed = time.perf_counter() - started
    sent = sum(statuses.values())
    with capsys.disabled():
        print(
            f"\nfuzz {method} {path} {mode.value}{' (key generated)' if any_key else ''}: "
            f"{sent} requests in {elapsed:.1f} s, "
            f"statuses {dict(sorted(statuses.items()))}"
        )
    # Hypothesis stops early only when it has tried every case there is (the one-example
    # routes); elsewhere the figure printed is the budget.
    if share:
        assert sent >= 0.9 * examples
