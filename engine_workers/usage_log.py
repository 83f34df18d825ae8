"""What each request cost the engine, by the gateway's request id (core layer: asyncio, no gRPC).

The safety filter settles a key's token budget and usage ledger from a worker's usage
trailers. A stream whose client went away ends without them (Envoy resets the upstream
stream), so the filter asks the replica afterwards (the `frugal.v1.EngineUsage` service);
this log is what the worker answers from. A record is opened when a request arrives with
an `x-request-id` and closed once, when it ends however it ended (finished, failed, or
cancelled by its client); its counts are the request's `RequestTiming`, the same count
the trailers and the metrics report, read live while it runs and frozen when it ends.

The log is bounded by entries and by age, whichever bites first: the oldest records go
first, and a record's age starts again when its request ends, so the filter can still
ask about a long stream for the whole window after it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# A worker carries a few hundred concurrent streams and the filter asks within seconds of
# a stream's end; 10,000 records over 10 minutes leave it minutes of slack at thousands of
# requests a minute, in a few MB.
MAX_ENTRIES = 10_000
MAX_AGE_SECONDS = 600.0


class TokenCounts(Protocol):
    """A request's running token counts (engine_workers.core.RequestTiming)."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class RequestUsage:
    """A request's tokens; `finished`: it has ended and the counts are final."""

    finished: bool
    prompt_tokens: int
    completion_tokens: int


class UsageRecord:
    """One request's entry: live counts while it runs, frozen when `end` is first called."""

    def __init__(
        self, request_id: str, counts: TokenCounts, on_end: Callable[[UsageRecord], None]
    ) -> None:
        self.request_id = request_id
        self.stamp = 0.0  # when it was opened, then when it ended (the log's clock)
        self._counts = counts
        self._on_end = on_end
        self._final: RequestUsage | None = None
        self._ended = asyncio.Event()

    def usage(self) -> RequestUsage:
        if self._final is not None:
            return self._final
        return RequestUsage(False, self._counts.prompt_tokens, self._counts.completion_tokens)

    def end(self) -> None:
        """The request is over: freeze its counts and wake its waiters (once; later calls,
        from the other ways a request can end, change nothing)."""
        if self._final is not None:
            return
        self._final = RequestUsage(True, self._counts.prompt_tokens, self._counts.completion_tokens)
        self._ended.set()
        self._on_end(self)

    async def ended(self, timeout: float) -> None:
        """Return when the request ends, or after `timeout` seconds, whichever is first."""
        if self._ended.is_set() or timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout)


class RequestUsageLog:
    """The usage records of one worker, at most `max_entries` of them and none older than
    `max_age_seconds` (since their request ended, or began while it runs)."""

    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        max_age_seconds: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or max_age_seconds <= 0:
            raise ValueError("a usage log needs room for one record for some time")
        self._max_entries = max_entries
        self._max_age = max_age_seconds
        self._clock = clock
        # Oldest stamp first: opening appends, ending moves to the end, both at "now".
        self._records: OrderedDict[str, UsageRecord] = OrderedDict()

    def __len__(self) -> int:
        self._evict()
        return len(self._records)

    def open(self, request_id: str, counts: TokenCounts) -> UsageRecord:
        """Start recording a request; a later request with the same id (a retry on this
        replica) replaces the earlier one's record."""
        record = UsageRecord(request_id, counts, self._ended)
        self._records.pop(request_id, None)
        self._store(record)
        return record

    def get(self, request_id: str) -> RequestUsage | None:
        record = self._record(request_id)
        return None if record is None else record.usage()

    async def wait(self, request_id: str, timeout: float) -> RequestUsage | None:
        """The request's usage once it has ended, or as far as it got after `timeout`
        seconds; None when no record of it is kept."""
        record = self._record(request_id)
        if record is None:
            return None
        await record.ended(timeout)
        return record.usage()

    def _record(self, request_id: str) -> UsageRecord | None:
        self._evict()
        return self._records.get(request_id)

    def _ended(self, record: UsageRecord) -> None:
        """Its age starts again at its end; a record evicted while its request ran comes
        back as the newest, unless a later request has taken its id."""
        current = self._records.get(record.request_id)
        if current is None or current is record:
            self._records.pop(record.request_id, None)
            self._store(record)

    def _store(self, record: UsageRecord) -> None:
        record.stamp = self._clock()
        self._records[record.request_id] = record
        self._evict()

    def _evict(self) -> None:
        while len(self._records) > self._max_entries:
            self._records.popitem(last=False)
        oldest_kept = self._clock() - self._max_age
        while self._records and next(iter(self._records.values())).stamp < oldest_kept:
            self._records.popitem(last=False)
