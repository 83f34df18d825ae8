"""ext_authz Check over a real grpc.aio server and channel, with real Redis behind the KeyStore."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as attrs
from envoy.service.auth.v3 import external_auth_pb2 as auth
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from prometheus_client import CollectorRegistry

from frugal import wire
from frugal.keys import KeyStore, Peppers
from frugal.keys.format import PREFIX, checksum, new_key, parse_key
from frugal.keys.record import utc_now
from safety_filter.authz import add_authorization_servicer
from safety_filter.authz.responses import UNAUTHENTICATED_BODY
from tests.helpers.redis_server import RedisServer, _free_port

PEPPERS = Peppers({1: b"k" * 32})
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


@dataclass
class AuthzServer:
    stub: Any
    store: KeyStore
    registry: CollectorRegistry

    def count(self, outcome: str) -> float:
        value = self.registry.get_sample_value("frugal_auth_decisions_total", {"outcome": outcome})
        return value or 0.0


@pytest_asyncio.fixture(loop_scope="session")
async def authz(redis_server: RedisServer) -> AsyncIterator[AuthzServer]:
    redis_server.flush()
    client = aioredis.from_url(redis_server.url)
    store = KeyStore(client, PEPPERS)
    registry = CollectorRegistry()
    server = grpc.aio.server()
    add_authorization_servicer(server, store, registry)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield AuthzServer(auth_grpc.AuthorizationStub(channel), store, registry)
    await server.stop(grace=None)
    await client.aclose()


def check_request(headers: dict[str, str]) -> Any:
    http = attrs.AttributeContext.HttpRequest(
        id="req-1",
        method="POST",
        path="/v1/chat/completions",
        host="gateway",
        headers={":path": "/v1/chat/completions", **headers},
    )
    return auth.CheckRequest(
        attributes=attrs.AttributeContext(request=attrs.AttributeContext.Request(http=http))
    )


def set_headers(response: Any) -> dict[str, str]:
    assert all(h.append_action == OVERWRITE for h in response.ok_response.headers)
    return {h.header.key: h.header.value for h in response.ok_response.headers}


async def test_valid_key_is_allowed_with_identity_headers(authz: AuthzServer) -> None:
    record, plaintext = await authz.store.create(
        "ci", "acme", models=["m1", "m2"], rpm=60, tpm=9000
    )
    before = authz.count("ok")
    response = await authz.stub.Check(
        check_request({"authorization": f"Bearer {plaintext}", wire.TENANT_HEADER: "evil"})
    )
    assert response.status.code == grpc.StatusCode.OK.value[0]
    assert response.HasField("ok_response")
    assert set_headers(response) == {
        wire.KEY_ID_HEADER: record.id,
        wire.TENANT_HEADER: "acme",
        wire.KEY_MODELS_HEADER: "m1,m2",
        wire.KEY_RPM_HEADER: "60",
        wire.KEY_TPM_HEADER: "9000",
    }
    assert list(response.ok_response.headers_to_remove) == ["authorization", "x-api-key"]
    assert response.dynamic_metadata[wire.AUTHZ_KEY_ID] == record.id
    assert authz.count("ok") == before + 1


async def test_unlimited_key_strips_limit_headers(authz: AuthzServer) -> None:
    _, plaintext = await authz.store.create("ci", "acme")
    response = await authz.stub.Check(
        check_request({"authorization": f"bearer {plaintext}", wire.KEY_RPM_HEADER: "999999"})
    )
    headers = set_headers(response)
    assert headers[wire.KEY_MODELS_HEADER] == "*"
    assert wire.KEY_RPM_HEADER not in headers and wire.KEY_TPM_HEADER not in headers
    assert {wire.KEY_RPM_HEADER, wire.KEY_TPM_HEADER} <= set(response.ok_response.headers_to_remove)


async def test_x_api_key_is_accepted(authz: AuthzServer) -> None:
    record, plaintext = await authz.store.create("ci", "acme")
    response = await authz.stub.Check(check_request({"x-api-key": plaintext}))
    assert response.HasField("ok_response")
    assert set_headers(response)[wire.KEY_ID_HEADER] == record.id


async def test_raw_header_map_is_read(authz: AuthzServer) -> None:
    """Envoy sends `header_map` with raw_value bytes when encode_raw_headers is on."""
    _, plaintext = await authz.store.create("ci", "acme")
    request = check_request({})
    request.attributes.request.http.header_map.headers.add(
        key="authorization", raw_value=f"Bearer {plaintext}".encode()
    )
    assert (await authz.stub.Check(request)).HasField("ok_response")


def other_secret(plaintext: str) -> str:
    parsed = parse_key(plaintext)
    assert parsed is not None
    body = f"{PREFIX}{parsed.key_id}_{new_key().secret}"
    return body + checksum(body)


async def test_every_denial_is_the_same_401(authz: AuthzServer) -> None:
    _, valid = await authz.store.create("ci", "acme")
    _, expired = await authz.store.create("x", "acme", expires_at=utc_now() - timedelta(days=1))
    revoked_record, revoked = await authz.store.create("r", "acme")
    await authz.store.revoke(revoked_record.id)
    cases = {
        "missing": {},
        "missing-empty": {"authorization": ""},
        "malformed-scheme": {"authorization": f"Basic {valid}"},
        "malformed-key": {"authorization": "Bearer sk-frugal-nope"},
        "malformed-x-api-key": {"x-api-key": valid[:-1]},
        "unknown": {"authorization": f"Bearer {new_key().plaintext}"},
        "wrong-secret": {"authorization": f"Bearer {other_secret(valid)}"},
        "expired": {"authorization": f"Bearer {expired}"},
        "revoked": {"x-api-key": revoked},
    }
    counts = {o: authz.count(o) for o in ("missing", "malformed", "unknown", "expired", "revoked")}
    denials = {name: await authz.stub.Check(check_request(h)) for name, h in cases.items()}

    first = denials["missing"]
    assert first.status.code == 16  # UNAUTHENTICATED
    assert first.denied_response.status.code == 401
    assert first.denied_response.body == UNAUTHENTICATED_BODY
    assert [(h.header.key, h.header.value) for h in first.denied_response.headers] == [
        ("www-authenticate", "Bearer")
    ]
    for name, response in denials.items():
        assert not response.HasField("ok_response"), name
        assert response.SerializeToString(deterministic=True) == first.SerializeToString(
            deterministic=True
        ), name
    for text in (valid, expired, revoked):
        assert text not in first.denied_response.body
    assert authz.count("missing") == counts["missing"] + 2
    assert authz.count("malformed") == counts["malformed"] + 3
    assert authz.count("unknown") == counts["unknown"] + 2
    assert authz.count("expired") == counts["expired"] + 1
    assert authz.count("revoked") == counts["revoked"] + 1


async def test_unreachable_redis_fails_closed_with_503() -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{_free_port()}/0")
    registry = CollectorRegistry()
    server = grpc.aio.server()
    add_authorization_servicer(server, KeyStore(client, PEPPERS), registry)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = auth_grpc.AuthorizationStub(channel)
            request = check_request({"authorization": f"Bearer {new_key().plaintext}"})
            response = await stub.Check(request)
    finally:
        await server.stop(grace=None)
        await client.aclose()
    assert response.status.code == 14  # UNAVAILABLE
    assert response.denied_response.status.code == 503
    assert registry.get_sample_value("frugal_auth_decisions_total", {"outcome": "error"}) == 1


@pytest.mark.parametrize("outcome", ["ok", "missing", "malformed", "unknown", "expired", "revoked"])
async def test_every_outcome_is_exported_from_the_start(outcome: str) -> None:
    registry = CollectorRegistry()
    client = aioredis.from_url(f"redis://127.0.0.1:{_free_port()}/0")
    add_authorization_servicer(grpc.aio.server(), KeyStore(client, PEPPERS), registry)
    assert registry.get_sample_value("frugal_auth_decisions_total", {"outcome": outcome}) == 0
    await client.aclose()
