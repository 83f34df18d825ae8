"""The worker's usage log on its own: bounds by entries and by age, a record's life."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine_workers.core import RequestTiming
from engine_workers.usage_log import RequestUsage, RequestUsageLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def timing(prompt: int = 3, completion: int = 0) -> RequestTiming:
    return RequestTiming(prompt_tokens=prompt, completion_tokens=completion)


def test_a_record_is_live_while_its_request_runs_and_frozen_once_it_ends() -> None:
    log = RequestUsageLog()
    counts = timing()
    record = log.open("r", counts)
    counts.completion_tokens = 2
    assert log.get("r") == RequestUsage(False, 3, 2)
    record.end()
    counts.completion_tokens = 9  # nothing counted after the end changes the record
    record.end()
    assert log.get("r") == RequestUsage(True, 3, 2)
    assert log.get("other") is None


def test_the_oldest_records_go_beyond_the_entry_bound() -> None:
    log = RequestUsageLog(max_entries=3)
    for i in range(5):
        log.open(f"r{i}", timing()).end()
    assert len(log) == 3
    assert [log.get(f"r{i}") is not None for i in range(5)] == [False, False, True, True, True]


def test_age_counts_from_a_requests_end() -> None:
    clock = Clock()
    log = RequestUsageLog(max_age_seconds=600, clock=clock)
    long_stream = log.open("long", timing())
    log.open("short", timing()).end()
    clock.now += 550
    long_stream.end()  # a stream of 9 minutes ends: kept for another 10
    clock.now += 100
    assert log.get("short") is None
    assert log.get("long") == RequestUsage(True, 3, 0)
    clock.now += 501
    assert log.get("long") is None and len(log) == 0


def test_a_record_evicted_while_running_comes_back_when_it_ends() -> None:
    log = RequestUsageLog(max_entries=2)
    running = log.open("running", timing(completion=4))
    log.open("a", timing()).end()
    log.open("b", timing()).end()
    assert log.get("running") is None
    running.end()
    assert log.get("running") == RequestUsage(True, 3, 4)
    assert len(log) == 2 and log.get("a") is None


def test_a_retry_with_the_same_id_replaces_the_record() -> None:
    log = RequestUsageLog()
    first = log.open("r", timing(completion=1))
    second = log.open("r", timing(completion=5))
    first.end()  # the earlier attempt ending does not overwrite the later one's record
    assert log.get("r") == RequestUsage(False, 3, 5)
    second.end()
    assert log.get("r") == RequestUsage(True, 3, 5)


def test_bounds_must_leave_room() -> None:
    with pytest.raises(ValueError):
        RequestUsageLog(max_entries=0)
    with pytest.raises(ValueError):
        RequestUsageLog(max_age_seconds=0)


async def test_wait_returns_at_the_end_or_after_the_timeout() -> None:
    log = RequestUsageLog()
    record = log.open("r", timing(completion=2))
    assert await log.wait("unknown", 1.0) is None
    started = time.monotonic()
    assert await log.wait("r", 0.05) == RequestUsage(False, 3, 2)
    assert time.monotonic() - started >= 0.05
    asyncio.get_running_loop().call_later(0.05, record.end)
    # A wait far longer than any test run: only the end can have returned it.
    assert await log.wait("r", 3600.0) == RequestUsage(True, 3, 2)
