"""What one request costs the policy chain before its engine sees it: one ext_proc
stream into Python (no ext_authz, no rate limit service call) and one Redis command;
its bill is one more Redis command, after the answer.

Counted from Envoy's own stats and from Redis' MONITOR, on the session's stack.
"""

from __future__ import annotations

import asyncio
import re

import httpx
from redis.asyncio import Redis

from frugal.group_lines_store import LINES_KEY
from frugal.redis_connection import SAFETY_FILTER_CLIENT
from safety_filter.picker_roster import ROSTER_KEY
from tests.helpers.redis_monitor import collect, named_clients
from tests.helpers.stack import FrugalStack

ENGINE_REQUESTS = r"cluster\.engine__sim[-_]echo__echo\.upstream_rq_total"
CHAT = {"model": "sim-echo", "messages": [{"role": "user", "content": "one two three"}]}


async def envoy_counter(stack: FrugalStack, pattern: str) -> int:
    async with httpx.AsyncClient() as client:
        text = (await client.get(stack.envoy_admin + "/stats")).text
    return sum(int(v) for v in re.findall(rf"^{pattern}: (\d+)$", text, re.MULTILINE))


async def test_a_request_is_one_python_stream_and_one_redis_command_before_the_engine(
    stack: FrugalStack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200  # warm
        streams = "cluster.safety_filter.upstream_rq_total"
        before_streams = await envoy_counter(stack, streams)
        before_engine = await envoy_counter(stack, ENGINE_REQUESTS)
        redis = Redis.from_url(stack.config.redis.url)
        # Only the safety filter's commands count: the control plane has Redis traffic of its
        # own (its balancer lease and shared state, four times a second) that no request makes.
        ours = await named_clients(redis, SAFETY_FILTER_CLIENT)
        sent: list[str] = []
        senders: list[str] = []

        def seen() -> list[str]:
            return [c for c, sender in zip(sent, senders, strict=False) if sender in ours]

        async with redis.monitor() as monitor:
            # The group picker's once-a-second refresh (its roster stamp and its lines)
            # is no request's either.
            background = (ROSTER_KEY, LINES_KEY)
            listening = asyncio.ensure_future(collect(monitor, sent, senders, background))
            await asyncio.sleep(0.1)
            answer = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
            assert answer.status_code == 200 and answer.text.endswith("data: [DONE]\n\n")
            deadline = asyncio.get_running_loop().time() + 5.0
            while seen().count("EVALSHA") < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
            listening.cancel()
        ours |= await named_clients(redis, SAFETY_FILTER_CLIENT)  # any opened meanwhile
        await redis.aclose()
    assert await envoy_counter(stack, streams) - before_streams == 1
    assert await envoy_counter(stack, ENGINE_REQUESTS) > before_engine
    # The admission script, then (after the answer) the settlement script. The key's
    # record and policy come from the processor's caches; one may be refreshed in the
    # background (HGETALL / MGET, five times a second per process, one pipeline each, whatever
    # the load), never on the request's path.
    assert seen().count("EVALSHA") == 2
    assert set(seen()) <= {"EVALSHA", "HGETALL", "MGET"}, seen()
    assert ours, "the safety filter's connections name themselves"
    for name in ("ext_authz", "ratelimit"):
        assert await envoy_counter(stack, rf"http\.public\.{name}\.ok") == 0
