"""Settling requests in the background, in batches, each until Redis has taken it.

I/O layer over `token_budget.TokenBudget.settle_many`. A settlement is the bill of a
request that ended: it must reach Redis exactly once, also when Redis is slow,
restarting or briefly down, and also when the request's own ext_proc stream was cancelled
(a client that left). So the safety filter never awaits a settle on the request's path:
it submits it here. One task sends what is pending in one pipeline (at most `batch` at
a time: under load, many requests' bills share one round trip); a settlement whose call
failed waits and goes again with the next batch, with backoff. The settle script is
idempotent per request id for `SETTLED_TTL_S`, so retries stop well before that
(`retry_for_s`) and a retry whose first try did land changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from frugal.accounting.token_budget import SETTLED_TTL_S, Charge, TokenBudget

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.05
MAX_RETRY_S = 5.0


@dataclass(frozen=True)
class Settlement:
    key_id: str
    request_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    ended_at: float  # Unix time the request ended: the window and day it is billed to

    def charge(self) -> Charge:
        return Charge(
            self.key_id, self.request_id, self.model, self.prompt_tokens,
            self.completion_tokens, self.ended_at,
        )  # fmt: skip


@dataclass
class _Pending:
    settlement: Settlement
    give_up_at: float  # monotonic
    wait_s: float = FIRST_RETRY_S
    attempts: int = field(default=0)


class Settlements:
    def __init__(
        self, budget: TokenBudget, batch: int = 256, retry_for_s: float = SETTLED_TTL_S * 0.9
    ) -> None:
        self._budget = budget
        self._batch = batch
        self._retry_for_s = retry_for_s
        self._queue: list[_Pending] = []
        self._waiting = 0  # settlements sleeping before a retry, or being resolved
        self._sender: asyncio.Task[None] | None = None
        self._resolving: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.retries = 0
        self.settled = 0
        self.abandoned = 0  # still failing after retry_for_s: logged as an error

    @property
    def pending(self) -> int:
        return len(self._queue) + self._waiting

    def submit(self, settlement: Settlement) -> None:
        self._enqueue(_Pending(settlement, time.monotonic() + self._retry_for_s))

    def submit_resolved(self, settlement: Awaitable[Settlement]) -> None:
        """Settle what `settlement` resolves to (it must not raise), e.g. once an engine
        said what it generated."""
        self._waiting += 1
        self._idle.clear()

        async def resolve() -> None:
            resolved = await settlement
            self._waiting -= 1
            self.submit(resolved)

        task = asyncio.get_running_loop().create_task(resolve())
        self._resolving.add(task)
        task.add_done_callback(self._resolving.discard)

    def _enqueue(self, pending: _Pending) -> None:
        self._queue.append(pending)
        self._idle.clear()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._batch], self._queue[self._batch :]
            try:
                answers: list[int | RedisError] = await self._budget.settle_many(
                    [pending.settlement.charge() for pending in batch]
                )
            except RedisError as error:
                answers = [error] * len(batch)
            for pending, answer in zip(batch, answers, strict=True):
                if isinstance(answer, RedisError):
                    self._retry_later(pending, answer)
                else:
                    self.settled += 1
        if not self._waiting:
            self._idle.set()

    def _retry_later(self, pending: _Pending, error: RedisError) -> None:
        request_id = pending.settlement.request_id
        if time.monotonic() + pending.wait_s > pending.give_up_at:
            self.abandoned += 1
            log.error("gave up settling request %s: %s", request_id, error)
            return
        self.retries += 1
        log.warning("settling request %s again in %.2f s: %s", request_id, pending.wait_s, error)
        self._waiting += 1
        wait_s, pending.wait_s = pending.wait_s, min(pending.wait_s * 2, MAX_RETRY_S)
        asyncio.get_running_loop().call_later(wait_s, self._retry_now, pending)

    def _retry_now(self, pending: _Pending) -> None:
        self._waiting -= 1
        self._enqueue(pending)

    async def drain(self, timeout_s: float) -> bool:
        """Wait for every submitted settlement (at shutdown); False if some are still open."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
