"""Settling requests in the background, each until Redis has taken it.

I/O layer over `token_budget.TokenBudget.settle`. A settlement is the bill of a request that
ended: it must reach Redis exactly once, also when Redis is slow, restarting or briefly down,
and also when the request's own ext_proc stream was cancelled (a client that left). So the
safety filter never awaits a settle on the request's path: it submits it here, and a task it
does not own retries it with backoff. The settle script is idempotent per request id for
`SETTLED_TTL_S`, so retries stop well before that (`retry_for_s`) and a retry whose first try
did land changes nothing. At most `concurrency` settles talk to Redis at once, which bounds
the connections they take from the shared pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from frugal.accounting.token_budget import SETTLED_TTL_S, TokenBudget

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


class Settlements:
    def __init__(
        self,
        budget: TokenBudget,
        concurrency: int = 16,
        retry_for_s: float = SETTLED_TTL_S * 0.9,
    ) -> None:
        self._budget = budget
        self._slots = asyncio.Semaphore(concurrency)
        self._retry_for_s = retry_for_s
        self._tasks: set[asyncio.Task[None]] = set()
        self.retries = 0
        self.settled = 0
        self.abandoned = 0  # still failing after retry_for_s: logged as an error

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def submit(self, settlement: Settlement) -> None:
        self._spawn(self._settle(settlement))

    def submit_resolved(self, settlement: Awaitable[Settlement]) -> None:
        """Settle what `settlement` resolves to (it must not raise), e.g. once an engine
        said what it generated."""

        async def resolve_then_settle() -> None:
            await self._settle(await settlement)

        self._spawn(resolve_then_settle())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, settlement: Settlement) -> None:
        deadline = time.monotonic() + self._retry_for_s
        wait_s = FIRST_RETRY_S
        while True:
            try:
                async with self._slots:
                    await self._budget.settle(
                        settlement.key_id,
                        settlement.request_id,
                        settlement.model,
                        settlement.prompt_tokens,
                        settlement.completion_tokens,
                        now=settlement.ended_at,
                    )
                self.settled += 1
                return
            except RedisError as error:
                if time.monotonic() + wait_s > deadline:
                    self.abandoned += 1
                    log.error("gave up settling request %s: %s", settlement.request_id, error)
                    return
                self.retries += 1
                log.warning("settling request %s again in %.2f s: %s",
                            settlement.request_id, wait_s, error)  # fmt: skip
                await asyncio.sleep(wait_s)
                wait_s = min(wait_s * 2, MAX_RETRY_S)

    async def drain(self, timeout_s: float) -> bool:
        """Wait for every submitted settlement (at shutdown); False if some are still open."""
        if not self._tasks:
            return True
        _, still_open = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        return not still_open
