"""The wait before a stream's first event: the plan's order, and the events passed through.

Pure plan; the runner on a real event loop with sources that wait on events the test
sets (no wall-clock assertions). The worker's use of it: tests/integration/test_stream_wait.py.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from engine_workers.first_token_wait import Due, WaitPlan, until_first_event


def test_headers_first_then_a_comment_every_interval() -> None:
    plan = WaitPlan(headers_after_s=0.5, keepalive_interval_s=10.0)
    assert list(itertools.islice(plan.actions(), 4)) == [
        (0.5, Due.HEADERS),
        (10.0, Due.KEEPALIVE),
        (20.0, Due.KEEPALIVE),
        (30.0, Due.KEEPALIVE),
    ]


def test_no_separate_headers_when_a_comment_is_due_first() -> None:
    plan = WaitPlan(headers_after_s=15.0, keepalive_interval_s=10.0)
    assert [due for _, due in itertools.islice(plan.actions(), 3)] == [Due.KEEPALIVE] * 3


async def _after(release: asyncio.Event, items: list[str]) -> AsyncIterator[str]:
    await release.wait()
    for item in items:
        yield item


async def test_actions_fall_due_until_the_first_event_then_events_pass_through() -> None:
    release = asyncio.Event()
    plan = WaitPlan(headers_after_s=0.001, keepalive_interval_s=0.002)
    seen: list[object] = []
    async for item in until_first_event(_after(release, ["a", "b", "c"]), plan):
        seen.append(item)
        if seen.count(Due.KEEPALIVE) == 3:
            release.set()
    assert seen == [Due.HEADERS, Due.KEEPALIVE, Due.KEEPALIVE, Due.KEEPALIVE, "a", "b", "c"]


async def test_a_quick_first_event_needs_no_action() -> None:
    release = asyncio.Event()
    release.set()
    plan = WaitPlan(headers_after_s=60.0, keepalive_interval_s=60.0)
    assert [item async for item in until_first_event(_after(release, ["a"]), plan)] == ["a"]
    assert [item async for item in until_first_event(_after(release, []), plan)] == []


async def _failing(release: asyncio.Event) -> AsyncIterator[str]:
    await release.wait()
    raise RuntimeError("engine fault")
    yield "never"  # pragma: no cover


async def test_an_error_before_the_first_event_reaches_the_caller() -> None:
    release = asyncio.Event()
    plan = WaitPlan(headers_after_s=0.001, keepalive_interval_s=0.002)
    seen: list[object] = []
    with pytest.raises(RuntimeError, match="engine fault"):
        async for item in until_first_event(_failing(release), plan):
            seen.append(item)
            release.set()
    assert seen == [Due.HEADERS]


async def test_a_caller_that_leaves_closes_the_source() -> None:
    closed = asyncio.Event()

    async def waiting_forever() -> AsyncIterator[str]:
        try:
            await asyncio.Event().wait()
            yield "never"
        finally:
            closed.set()

    plan = WaitPlan(headers_after_s=0.001, keepalive_interval_s=0.002)
    waiting = until_first_event(waiting_forever(), plan)
    assert await anext(waiting) is Due.HEADERS
    await waiting.aclose()
    assert closed.is_set()
