"""The token budget of one request: reserved before an engine sees it, settled once at its end.

I/O layer over frugal.accounting.TokenBudget (Redis). The reservation is the
prompt's estimated size plus the most the request may generate; the settlement
is the engine's real count (usage in the body or the x-frugal-*-tokens trailers),
or, when the engine never reported one (client gone, engine failed), the estimate
plus the tokens seen on the way out. Settling is exactly once (the budget's own
guarantee) and also records the request in the usage ledger.
"""

from __future__ import annotations

import logging
import math

from redis import RedisError

from frugal.accounting.token_budget import Refusal, TokenBudget
from safety_filter.errors import ApiError, tokens_exhausted

log = logging.getLogger(__name__)

# Without a tokenizer for every engine, a prompt's size is estimated from its
# length: ~4 characters a token for English text (OpenAI's rule of thumb), rounded up.
CHARS_PER_TOKEN = 4


def estimate_tokens(characters: int) -> int:
    return math.ceil(characters / CHARS_PER_TOKEN)


class UsageMeter:
    def __init__(
        self, budget: TokenBudget, key_id: str, request_id: str, model: str, prompt_estimate: int
    ) -> None:
        self._budget = budget
        self.key_id = key_id
        self.request_id = request_id
        self.model = model
        self.prompt_estimate = prompt_estimate
        self._settled = False

    async def reserve(self, tpm_limit: int | None, max_output_tokens: int) -> None:
        try:
            outcome = await self._budget.reserve(
                self.key_id, tpm_limit, self.prompt_estimate + max_output_tokens, self.request_id
            )
        except RedisError as error:
            raise ApiError(
                503, "server_error", "service_unavailable", "The usage store is unavailable."
            ) from error
        if isinstance(outcome, Refusal):
            raise tokens_exhausted(outcome.limit, outcome.remaining, outcome.reset_s)

    async def settle(self, prompt_tokens: int | None, completion_tokens: int) -> None:
        """Charge the real usage (prompt_tokens None: use the estimate); later calls do nothing."""
        if self._settled:
            return
        self._settled = True
        prompt = self.prompt_estimate if prompt_tokens is None else prompt_tokens
        try:
            await self._budget.settle(
                self.key_id, self.request_id, self.model, prompt, completion_tokens
            )
        except RedisError:
            # The reservation expires by itself; the tokens stay counted in their window.
            log.exception("could not settle request %s", self.request_id)
