"""Admin REST for API keys (control_plane.admin) through httpx.ASGITransport, real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from fastapi import APIRouter

from control_plane.admin import create_admin_app
from frugal.keys import KeyStore, Peppers
from frugal.keys.format import parse_key
from frugal.keys.record import utc_now
from tests.helpers.redis_server import RedisServer

TOKEN = "test-admin-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
PEPPERS = Peppers({1: b"a" * 32})


@dataclass
class Admin:
    client: httpx.AsyncClient
    store: KeyStore
    redis: aioredis.Redis

    async def create(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "ci", "tenant": "acme", **fields}
        response = await self.client.post("/admin/v1/keys", json=body, headers=AUTH)
        assert response.status_code == 201, response.text
        answer: dict[str, Any] = response.json()
        return answer


@pytest_asyncio.fixture(loop_scope="session")
async def admin(redis_server: RedisServer) -> AsyncIterator[Admin]:
    redis_server.flush()
    redis = aioredis.from_url(redis_server.url)
    store = KeyStore(redis, PEPPERS)
    ping = APIRouter(prefix="/admin/v1/ping")  # stands for the usage router added later

    @ping.get("")
    async def pong() -> dict[str, str]:
        return {"pong": "yes"}

    app = create_admin_app(store, TOKEN, extra_routers=[ping])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        yield Admin(client, store, redis)
    await redis.aclose()


def assert_openai_error(response: httpx.Response, status: int, kind: str, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (kind, code)
    assert isinstance(error["message"], str) and error["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/v1/keys"),
        ("POST", "/admin/v1/keys"),
        ("GET", "/admin/v1/keys/AAAAAAAAAAAA"),
        ("POST", "/admin/v1/keys/AAAAAAAAAAAA/revoke"),
        ("POST", "/admin/v1/keys/AAAAAAAAAAAA/rotate"),
        ("GET", "/admin/v1/ping"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong-token-0123456789"}, {"authorization": f"Basic {TOKEN}"}],
)
async def test_every_route_needs_the_admin_token(
    admin: Admin, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await admin.client.request(method, path, headers=headers, json={})
    assert_openai_error(response, 401, "authentication_error", "invalid_admin_token")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_extra_routers_work_with_the_token(admin: Admin) -> None:
    response = await admin.client.get("/admin/v1/ping", headers=AUTH)
    assert response.json() == {"pong": "yes"}


async def test_create_shows_the_key_once(admin: Admin) -> None:
    created = await admin.create(models=["m1"], rpm=60, tpm=1000)
    plaintext = created["key"]
    parsed = parse_key(plaintext)
    record = created["record"]
    assert parsed is not None and parsed.key_id == record["id"]
    assert record["status"] == "active" and record["models"] == ["m1"]
    assert "secret_hash" not in record and "pepper_version" not in record
    assert (await admin.store.authenticate(plaintext)) is not None
    await admin.store.touched()  # the use stamp is written off the request's path

    stored = await admin.store.get(record["id"])
    assert stored is not None
    for path in ("/admin/v1/keys", f"/admin/v1/keys/{record['id']}"):
        response = await admin.client.get(path, headers=AUTH)
        assert response.status_code == 200
        for secret in (plaintext, parsed.secret, stored.secret_hash, "secret_hash"):
            assert secret not in response.text
    listed = (await admin.client.get("/admin/v1/keys", headers=AUTH)).json()
    assert listed["object"] == "list"
    assert record["id"] in [k["id"] for k in listed["data"]]
    shown = (await admin.client.get(f"/admin/v1/keys/{record['id']}", headers=AUTH)).json()
    assert shown["last_used_at"] is not None  # authenticated above


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "ci", "tenant": "acme", "rpm": 0}, "rpm"),
        ({"name": "ci", "tenant": "acme", "tpm": "lots"}, "tpm"),
        ({"name": "ci"}, "tenant"),
        ({"name": "ci", "tenant": "a b"}, "tenant"),
        ({"name": "ci", "tenant": "acme", "models": ["a,b"]}, "models.0"),
        ({"name": "ci", "tenant": "acme", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "ci", "tenant": "acme", "colour": "red"}, "colour"),
    ],
)
async def test_validation_errors_name_the_field(
    admin: Admin, body: dict[str, Any], field: str
) -> None:
    response = await admin.client.post("/admin/v1/keys", json=body, headers=AUTH)
    assert_openai_error(response, 422, "invalid_request_error", "invalid_value")
    error = response.json()["error"]
    assert error["param"] == field
    assert error["message"].startswith(f"{field}: ")


async def test_unknown_key_is_404(admin: Admin) -> None:
    for method, path in [
        ("GET", "/admin/v1/keys/AAAAAAAAAAAA"),
        ("GET", "/admin/v1/keys/not-even-an-id"),
        ("POST", "/admin/v1/keys/AAAAAAAAAAAA/revoke"),
        ("POST", "/admin/v1/keys/AAAAAAAAAAAA/rotate"),
    ]:
        response = await admin.client.request(method, path, headers=AUTH)
        assert_openai_error(response, 404, "invalid_request_error", "key_not_found")


async def test_revoke(admin: Admin) -> None:
    created = await admin.create()
    key_id = created["record"]["id"]
    response = await admin.client.post(f"/admin/v1/keys/{key_id}/revoke", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["status"] == "revoked" and response.json()["revoked"] is True
    assert created["key"] not in response.text
    assert await admin.store.authenticate(created["key"]) is None
    again = await admin.client.post(f"/admin/v1/keys/{key_id}/revoke", headers=AUTH)
    assert again.status_code == 200  # idempotent
    rotate = await admin.client.post(f"/admin/v1/keys/{key_id}/rotate", headers=AUTH)
    assert_openai_error(rotate, 409, "invalid_request_error", "key_state_conflict")


async def test_rotate(admin: Admin) -> None:
    created = await admin.create(
        models=["m1"], expires_at=(utc_now() + timedelta(days=1)).isoformat()
    )
    key_id = created["record"]["id"]
    response = await admin.client.post(
        f"/admin/v1/keys/{key_id}/rotate", json={"overlap_s": 600}, headers=AUTH
    )
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["key"] != created["key"] and parse_key(answer["key"]) is not None
    assert answer["record"]["replaces"] == key_id
    assert answer["record"]["models"] == ["m1"]
    assert answer["record"]["expires_at"] == created["record"]["expires_at"]
    assert answer["previous"]["status"] == "rotating"
    assert answer["previous"]["replaced_by"] == answer["record"]["id"]
    assert await admin.store.authenticate(created["key"]) is not None  # within the overlap
    assert await admin.store.authenticate(answer["key"]) is not None
    bad = await admin.client.post(
        f"/admin/v1/keys/{answer['record']['id']}/rotate", json={"overlap_s": -1}, headers=AUTH
    )
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "overlap_s"


async def test_openapi_docs_describe_the_routes(admin: Admin) -> None:
    schema = (await admin.client.get("/admin/openapi.json")).json()
    assert {"/admin/v1/keys", "/admin/v1/keys/{key_id}/rotate"} <= set(schema["paths"])
    assert "AdminToken" in schema["components"]["securitySchemes"]
    assert (await admin.client.get("/admin/docs")).status_code == 200


async def test_unknown_path_is_openai_shaped(admin: Admin) -> None:
    response = await admin.client.get("/admin/v1/nothing", headers=AUTH)
    assert_openai_error(response, 404, "invalid_request_error", "not_found")


def test_short_admin_token_is_refused(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="at least"):
        create_admin_app(KeyStore(aioredis.from_url(redis_server.url), PEPPERS), "short")
