"""The limits and the bill of one request: admitted before an engine sees it, settled once at
its end.

I/O layer over frugal.accounting (Redis). Admission is one script: the key's request rate and
the token reservation (the prompt's estimated size plus the most the request may generate;
what the key can still afford when the request names no limit). At most `admitting` requests
of this process wait on Redis to be admitted at once; one that cannot start within
`admit_wait_s` is shed with a counted 503 `overloaded` and `retry-after`, before anything was
counted for it. An admitted request is never failed for its bill: the settlement (the
engine's real count, or, when the engine never reported one, what the engine says it
generated, else the prompt's estimate) goes to `Settlements`, which retries it until Redis
has it, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

from redis import RedisError

from frugal.accounting.admission import Admission, AdmissionRequest, Admitted, Refused
from frugal.accounting.settlements import Settlement, Settlements
from safety_filter.errors import overloaded, usage_store_unavailable
from safety_filter.extproc.limit_headers import refusal

log = logging.getLogger(__name__)

# Without a tokenizer for every engine, a prompt's size is estimated from its
# length: ~4 characters a token for English text (OpenAI's rule of thumb), rounded up.
CHARS_PER_TOKEN = 4

Usage = tuple[int | None, int]  # (prompt tokens, None: the estimate; completion tokens)


def estimate_tokens(characters: int) -> int:
    return math.ceil(characters / CHARS_PER_TOKEN)


class Accounting:
    """What every request's meter of one process shares."""

    def __init__(
        self,
        admission: Admission,
        settlements: Settlements,
        admitting: int = 256,
        admit_wait_s: float = 1.0,
    ) -> None:
        self.admission = admission
        self.settlements = settlements
        self._slots = asyncio.Semaphore(admitting)
        self._admit_wait_s = admit_wait_s
        self.shed = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked():  # only then is there anything to wait for (and to time)
            try:
                await asyncio.wait_for(self._slots.acquire(), self._admit_wait_s)
            except TimeoutError:
                self.shed += 1
                raise overloaded(retry_after_s=1) from None
        else:
            await self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()


@dataclass
class UsageMeter:
    accounting: Accounting
    key_id: str
    request_id: str
    model: str
    prompt_estimate: int
    admitted: Admitted | None = None
    _settled: bool = False

    async def admit(
        self, rpm: int | None, tpm: int | None, max_output: int | None, default_output: int
    ) -> Admitted:
        """Count the request and reserve its tokens, or raise the ApiError that refuses it."""
        request = AdmissionRequest(
            self.key_id, self.request_id, self.prompt_estimate, max_output, default_output,
            rpm, tpm,
        )  # fmt: skip
        async with self.accounting.slot():
            try:
                outcome = await self.accounting.admission.admit(request)
            except RedisError as error:
                log.error("refusing the request, the usage store did not answer: %s", error)
                raise usage_store_unavailable() from error
        if isinstance(outcome, Refused):
            raise refusal(outcome)
        self.admitted = outcome
        return outcome

    @property
    def settled(self) -> bool:
        return self._settled

    def settle(self, usage: Usage | None) -> None:
        """Bill the engine's count (None, or a None prompt: the estimate); once."""
        if self._claim():
            self.accounting.settlements.submit(self._settlement(usage))

    def settle_when(self, usage: Awaitable[Usage | None]) -> None:
        """Bill what `usage` finds out (e.g. asking the engine), off the request's path."""
        if self._claim():
            ended_at = time.time()
            settlements = self.accounting.settlements

            async def resolved() -> Settlement:
                return self._settlement(await usage, ended_at)

            settlements.submit_resolved(resolved())

    def _claim(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        return True

    def _settlement(self, usage: Usage | None, ended_at: float | None = None) -> Settlement:
        prompt, completion = usage or (None, 0)
        return Settlement(
            self.key_id,
            self.request_id,
            self.model,
            self.prompt_estimate if prompt is None else prompt,
            completion,
            time.time() if ended_at is None else ended_at,
        )
