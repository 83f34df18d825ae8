"""Admin REST and bodies that are not JSON (found by fuzzing it, tests/fuzz): without the
token the answer is 401 before the body is read; with it, a 4xx in OpenAI's shape naming
the body (control_plane.admin through httpx.ASGITransport, real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from control_plane.admin import create_admin_app
from frugal.keys import KeyStore, Peppers
from tests.helpers.redis_server import RedisServer

TOKEN = "test-admin-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json"}
# Not UTF-8, not JSON at all, JSON cut short.
BODIES = [b"\xe8", b"\x00", b'{"name": ']
ROUTES = [
    ("POST", "/admin/v1/keys"),
    ("POST", "/admin/v1/keys/AAAAAAAAAAAA/rotate"),
]


@pytest_asyncio.fixture(loop_scope="session")
async def client(redis_server: RedisServer) -> AsyncIterator[httpx.AsyncClient]:
    redis = aioredis.from_url(redis_server.url)
    app = create_admin_app(KeyStore(redis, Peppers({1: b"a" * 32})), TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as admin:
        yield admin
    await redis.aclose()


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_without_the_token_a_malformed_body_is_401(
    client: httpx.AsyncClient, method: str, path: str, body: bytes
) -> None:
    response = await client.request(method, path, content=body, headers=JSON)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_admin_token"


@pytest.mark.parametrize("body", BODIES)
async def test_with_the_token_a_malformed_body_is_a_client_error_naming_the_body(
    client: httpx.AsyncClient, body: bytes
) -> None:
    response = await client.post("/admin/v1/keys", content=body, headers={**JSON, **AUTH})
    assert response.status_code in (400, 422), response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert error["param"] in (None, "body")


async def test_the_documentation_needs_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin/openapi.json")).status_code == 200
    assert (await client.get("/admin/docs")).status_code == 200
