"""The API key check, inside the RequestProcessor's request-headers phase: real keys in a
KeyStore over the session's `redis_server` (a Redis that is down: a loopback port nothing
listens on).

Integration layer. Every refusal is the same 401, whatever the reason; the key store not
answering is a 503; the request goes on without the client's credentials or any
`x-frugal-*` header it sent; each outcome is counted in `frugal_auth_decisions_total`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from frugal import wire
from frugal.keys import AuthOutcome, KeyStore
from frugal.keys.format import PREFIX, checksum, new_key, parse_key
from frugal.keys.record import utc_now
from safety_filter.authz.key_check import ERROR_OUTCOME
from safety_filter.errors import ApiError, invalid_api_key
from safety_filter.extproc.metrics import ExtProcMetrics
from safety_filter.extproc.processor import CLIENT_HEADERS_REMOVED, RequestProcessor
from tests.helpers.redis_server import RedisServer, _free_port
from tests.integration.test_extproc_harness import (
    CHAT,
    PEPPERS,
    Gateway,
    Key,
    chat,
    only,
    open_gateway,
    request_headers,
    request_metadata,
    response_headers,
    sample,
    send_request,
    set_headers,
)

# What a client may send that only the gateway may set.
FORGED = (
    (wire.KEY_ID_HEADER, "someone-else"),
    (wire.TENANT_HEADER, "evil"),
    (wire.KEY_RPM_HEADER, "999999"),
    (wire.KEY_TPM_HEADER, "999999"),
    (wire.KEY_MODELS_HEADER, "*"),
    (wire.MODEL_HEADER, "sim-mixtral"),
)
ROTATION_OVERLAP_S = 0.3


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(redis_server: RedisServer) -> AsyncIterator[Gateway]:
    async with open_gateway(redis_server) as opened:
        yield opened


def decisions(metrics: ExtProcMetrics, outcome: str) -> float:
    return sample(metrics, "frugal_auth_decisions_total", outcome=outcome)


def bare_headers(path: str, *pairs: tuple[str, str]) -> ext.HttpHeaders:
    """Request headers with exactly these credentials (none of a Key's)."""
    return request_headers(path, None, *pairs)


async def refusal(
    processor: RequestProcessor, *pairs: tuple[str, str], path: str = CHAT
) -> ext.ProcessingResponse:
    """The immediate response that refuses a request at its headers."""
    with pytest.raises(ApiError) as caught:
        await processor.on_request_headers(bare_headers(path, *pairs))
    return processor.refuse(caught.value)


def other_secret(plaintext: str) -> str:
    """A well-formed key with the same id and a different secret."""
    parsed = parse_key(plaintext)
    assert parsed is not None
    body = f"{PREFIX}{parsed.key_id}_{new_key().secret}"
    return body + checksum(body)


# --- accepted ---------------------------------------------------------------------------------


async def test_a_valid_key_goes_on_without_its_credentials_or_forged_headers(
    gateway: Gateway,
) -> None:
    metrics = ExtProcMetrics()
    context = gateway.context(metrics=metrics)
    key = await gateway.new_key(models=["sim-echo"], rpm=60, tpm=9000, tenant="globex")
    pairs = (*key.headers(), ("x-api-key", key.plaintext), *FORGED)
    # Another path is answered at once.
    processor = RequestProcessor(context)
    answer = only(await processor.on_request_headers(request_headers("/v1/models", None, *pairs)))
    mutation = answer.request_headers.response.header_mutation
    assert set_headers(mutation) == {}
    assert list(mutation.remove_headers) == list(CLIENT_HEADERS_REMOVED)
    assert {"authorization", "x-api-key", *(name for name, _ in FORGED)} <= set(
        mutation.remove_headers
    )
    # An inference request's headers are answered with its body: x-frugal-model is the
    # gateway's, every other x-frugal-* header and the credentials are removed.
    processor = RequestProcessor(context)
    answered = await send_request(processor, None, chat("sim-echo"), *pairs)
    assert answered.set_headers == {wire.MODEL_HEADER: "sim-echo"}
    assert set(answered.mutation.remove_headers) == set(CLIENT_HEADERS_REMOVED) - {
        wire.MODEL_HEADER
    }
    assert decisions(metrics, "ok") == 2
    # The request is the key's, as the access log tells it.
    end = only(await processor.on_response_headers(response_headers(200)))
    assert request_metadata(end)["key_id"] == key.id
    assert request_metadata(end)["tenant"] == "globex"


@pytest.mark.parametrize(
    "sent",
    [
        [("authorization", "Bearer {key}")],
        [("authorization", "bearer  {key} ")],
        [("x-api-key", "{key}")],
        [("authorization", "Basic {key}"), ("x-api-key", "{key}")],  # not Bearer: x-api-key
    ],
    ids=["bearer", "lowercase-bearer", "x-api-key", "x-api-key-after-another-scheme"],
)
async def test_the_key_is_found_where_clients_send_it(
    gateway: Gateway, sent: list[tuple[str, str]]
) -> None:
    key = await gateway.new_key()
    pairs = [(name, template.format(key=key.plaintext)) for name, template in sent]
    only(await gateway.processor().on_request_headers(bare_headers("/v1/models", *pairs)))


async def test_a_header_envoy_sends_as_a_plain_value_is_read(gateway: Gateway) -> None:
    """Without encode_raw_headers Envoy fills `value`, not `raw_value`."""
    key = await gateway.new_key()
    headers = bare_headers("/v1/models")
    headers.headers.headers.append(
        base_pb2.HeaderValue(key="authorization", value=f"Bearer {key.plaintext}")
    )
    only(await gateway.processor().on_request_headers(headers))


async def test_the_grant_comes_from_the_key_not_from_headers_the_client_sent(
    gateway: Gateway,
) -> None:
    key = await gateway.new_key(models=["sim-echo"], tpm=100)
    with pytest.raises(ApiError) as caught:
        await send_request(gateway.processor(), key, chat("sim-mixtral"), *FORGED)
    assert caught.value.code == "model_not_allowed"
    with pytest.raises(ApiError) as caught:
        await send_request(gateway.processor(), key, chat("sim-echo", max_tokens=200), *FORGED)
    assert caught.value.code == "tokens_per_minute_exceeded"
    assert dict(caught.value.headers)["x-ratelimit-limit-tokens"] == "100"
    usage = await gateway.budget.window_usage("someone-else")
    assert (usage.used, usage.reserved) == (0, 0)


# --- refused ----------------------------------------------------------------------------------


async def test_every_refusal_is_the_same_401(gateway: Gateway) -> None:
    store = gateway.store
    valid = await gateway.new_key()
    expired = await gateway.new_key(expires_at=utc_now() - timedelta(days=1))
    revoked = await gateway.new_key()
    await store.revoke(revoked.id)
    cases: dict[str, tuple[tuple[str, str], ...]] = {
        "missing": (),
        "missing-empty": (("authorization", ""),),
        "malformed-scheme": (("authorization", f"Basic {valid.plaintext}"),),
        "malformed-key": (("authorization", "Bearer sk-frugal-nope"),),
        "malformed-x-api-key": (("x-api-key", valid.plaintext[:-1]),),
        "unknown": (("authorization", f"Bearer {new_key().plaintext}"),),
        "wrong-secret": (("authorization", f"Bearer {other_secret(valid.plaintext)}"),),
        "expired": tuple(expired.headers()),
        "revoked": (("x-api-key", revoked.plaintext),),
    }
    metrics = ExtProcMetrics()
    context = gateway.context(metrics=metrics)
    refusals = {name: await refusal(RequestProcessor(context), *h) for name, h in cases.items()}

    first = refusals["missing"].immediate_response
    error = invalid_api_key()
    assert first.status.code == 401
    assert first.body == error.message.encode()
    assert set_headers(first.headers) == {"www-authenticate": "Bearer"}
    assert request_metadata(refusals["missing"]) == {"model": "unknown", "error": error.code}
    reference = refusals["missing"].SerializeToString(deterministic=True)
    for name, response in refusals.items():
        assert response.SerializeToString(deterministic=True) == reference, name
    for key in (valid, expired, revoked):
        assert key.plaintext.encode() not in first.body and key.id.encode() not in first.body
    expected = {"missing": 2, "malformed": 3, "unknown": 2, "expired": 1, "revoked": 1}
    for outcome, count in expected.items():
        assert decisions(metrics, outcome) == count, outcome
    assert decisions(metrics, "ok") == 0
    assert sample(metrics, "frugal_extproc_refusals_total", code="invalid_api_key") == 9
    labels = {"model_name": "unknown", "status": "401"}
    assert sample(metrics, "frugal_requests_total", **labels) == 9


async def test_a_refusal_on_another_path_is_the_same_401_without_a_record(
    gateway: Gateway,
) -> None:
    metrics = ExtProcMetrics()
    response = await refusal(gateway.processor(metrics=metrics), path="/v1/models")
    assert response.immediate_response.status.code == 401
    assert request_metadata(response) == {}
    assert decisions(metrics, "missing") == 1
    assert metrics.registry.get_sample_value("frugal_requests_total", {}) is None


async def test_a_rotated_key_works_for_the_overlap_then_is_refused(gateway: Gateway) -> None:
    old = await gateway.new_key(models=["sim-echo"], rpm=5)
    record, plaintext = await gateway.store.rotate(old.id, overlap_s=ROTATION_OVERLAP_S)
    new = Key(record.id, plaintext)
    metrics = ExtProcMetrics()
    context = gateway.context(metrics=metrics)
    for key in (old, new):
        answer = await send_request(RequestProcessor(context), key, chat("sim-echo"))
        assert answer.set_headers == {wire.MODEL_HEADER: "sim-echo"}
    # Past the overlap (and the key store's cache), the old key is refused as expired.
    deadline = time.monotonic() + ROTATION_OVERLAP_S + 2.0
    while True:
        processor = RequestProcessor(context)
        try:
            await processor.on_request_headers(bare_headers("/v1/models", *old.headers()))
        except ApiError as error:
            assert error == invalid_api_key()
            break
        assert time.monotonic() < deadline, "the old key still works after the overlap"
        await asyncio.sleep(0.05)
    assert decisions(metrics, AuthOutcome.EXPIRED.value) == 1
    # The successor keeps the grants.
    with pytest.raises(ApiError) as caught:
        await send_request(RequestProcessor(context), new, chat("sim-mixtral"))
    assert caught.value.code == "model_not_allowed"


async def test_a_key_store_that_does_not_answer_fails_closed_with_503(gateway: Gateway) -> None:
    down = Redis.from_url(
        f"redis://127.0.0.1:{_free_port()}/0",
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    metrics = ExtProcMetrics()
    try:
        processor = gateway.processor(metrics=metrics, store=KeyStore(down, PEPPERS))
        response = await refusal(processor, *gateway.caller.headers())
    finally:
        await down.aclose()
    immediate = response.immediate_response
    assert immediate.status.code == 503
    assert set_headers(immediate.headers) == {"retry-after": "1"}
    assert request_metadata(response) == {"model": "unknown", "error": "service_unavailable"}
    assert decisions(metrics, ERROR_OUTCOME) == 1
    assert decisions(metrics, "unknown") == 0


@pytest.mark.parametrize("outcome", [*(o.value for o in AuthOutcome), ERROR_OUTCOME])
async def test_every_outcome_is_exported_from_the_start(gateway: Gateway, outcome: str) -> None:
    metrics = ExtProcMetrics()
    gateway.context(metrics=metrics)
    assert (
        metrics.registry.get_sample_value("frugal_auth_decisions_total", {"outcome": outcome}) == 0
    )
