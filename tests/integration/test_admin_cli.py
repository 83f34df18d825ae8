"""`frugal keys` against a real uvicorn admin server on a free loopback port, real Redis."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import uvicorn

from control_plane.admin import create_admin_app
from frugal.cli.__main__ import main
from frugal.keys import KeyStore, Peppers
from frugal.keys.format import SCANNER_PATTERN, parse_key
from tests.helpers.redis_server import RedisServer, _free_port

TOKEN = "cli-admin-token-0123456789"
PEPPERS = Peppers({1: b"c" * 32})


@dataclass
class AdminServer:
    url: str
    store: KeyStore


@pytest_asyncio.fixture(loop_scope="session")
async def admin_server(redis_server: RedisServer) -> AsyncIterator[AdminServer]:
    redis_server.flush()
    redis = aioredis.from_url(redis_server.url)
    store = KeyStore(redis, PEPPERS)
    config = uvicorn.Config(
        create_admin_app(store, TOKEN), host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "uvicorn stopped during start-up"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield AdminServer(f"http://127.0.0.1:{port}", store)
    server.should_exit = True
    await serving
    await redis.aclose()


async def frugal(*argv: str) -> int:
    """`frugal ...` in a worker thread, so the admin server keeps serving on this loop."""
    return await asyncio.to_thread(main, list(argv))


async def test_create_list_revoke_rotate(
    admin_server: AdminServer, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--admin-url", admin_server.url, "--admin-token", TOKEN]
    code = await frugal(
        "keys", "create", "--name", "ci", "--tenant", "acme", "--models", "m1, m2",
        "--rpm", "60", "--tpm", "100000", "--expires-in-days", "30", *common,
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    match = re.search(SCANNER_PATTERN, out)
    assert match is not None, out
    plaintext = match.group(0)
    parsed = parse_key(plaintext)
    assert parsed is not None and parsed.key_id in out
    assert "shown only this once" in out
    record = await admin_server.store.authenticate(plaintext)
    assert record is not None
    assert (record.models, record.rpm, record.tpm) == (["m1", "m2"], 60, 100000)
    assert record.expires_at is not None

    assert await frugal("keys", "list", *common) == 0
    listing = capsys.readouterr().out
    assert parsed.key_id in listing and "m1,m2" in listing and "active" in listing
    assert plaintext not in listing and parsed.secret not in listing

    assert await frugal("keys", "rotate", parsed.key_id, "--overlap", "60", *common) == 0
    rotated = capsys.readouterr().out
    new_keys = re.findall(SCANNER_PATTERN, rotated)
    assert len(new_keys) == 1 and new_keys[0] != plaintext
    assert await admin_server.store.authenticate(new_keys[0]) is not None

    assert await frugal("keys", "revoke", parsed.key_id, *common) == 0
    assert "revoked" in capsys.readouterr().out
    assert await admin_server.store.authenticate(plaintext) is None

    assert await frugal("keys", "list", "--json", *common) == 0
    data = json.loads(capsys.readouterr().out)["data"]
    assert {k["id"]: k["status"] for k in data}[parsed.key_id] == "revoked"


async def test_token_from_environment(
    admin_server: AdminServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRUGAL_ADMIN_TOKEN", TOKEN)
    assert await frugal("keys", "list", "--admin-url", admin_server.url) == 0
    assert capsys.readouterr().out.startswith("ID")


async def test_errors_are_reported(
    admin_server: AdminServer, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = ["--admin-url", admin_server.url, "--admin-token", "wrong-token-0123456789"]
    assert await frugal("keys", "list", *wrong) == 1
    assert "admin token" in capsys.readouterr().err

    common = ["--admin-url", admin_server.url, "--admin-token", TOKEN]
    assert await frugal("keys", "revoke", "AAAAAAAAAAAA", *common) == 1
    assert "No API key with id" in capsys.readouterr().err

    assert await frugal("keys", "create", "--name", "x", "--tenant", "a b", *common) == 1
    assert "tenant" in capsys.readouterr().err

    nowhere = ["--admin-url", f"http://127.0.0.1:{_free_port()}", "--admin-token", TOKEN]
    assert await frugal("keys", "list", *nowhere) == 1
    assert "cannot reach the admin API" in capsys.readouterr().err


async def test_missing_token_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRUGAL_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("FRUGAL_ADMIN_TOKEN_FILE", "/nonexistent/admin-token")
    assert await frugal("keys", "list") == 2
    assert "FRUGAL_ADMIN_TOKEN_FILE" in capsys.readouterr().err
