"""The batch bookkeeping of the `sim` engine (backend layer, pure: no asyncio, no clock).

A FIFO waiting queue and a running batch bounded by `max_batch` and the KV budget. Each
sequence reserves its prompt plus its planned output when admitted, as TensorRT-LLM's
GUARANTEED_NO_EVICT scheduler policy does, so nothing is ever evicted. With the profile's
prefix cache on, the leading blocks of a prompt found cached are not prefilled again. The
caller owns time: `admit()`, then wait `step_seconds(...)`, then `decode()`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from engine_workers.backends.prefix_cache import PrefixCache
from engine_workers.backends.sim_model import SequenceState, SimProfile, TokenStep


@dataclass(eq=False, slots=True)
class BatchEntry:
    request_id: str
    prompt_tokens: int
    state: SequenceState
    kv_reserved: int
    blocks: tuple[int, ...] = ()  # the prompt's block ids, for the prefix cache


@dataclass(frozen=True, slots=True)
class DecodeOutput:
    request_id: str
    step: TokenStep
    prompt_tokens: int
    completion_tokens: int


class BatchScheduler:
    """Who waits, who runs, and what one decode step produces."""

    def __init__(self, profile: SimProfile) -> None:
        self._profile = profile
        self._waiting: deque[BatchEntry] = deque()
        self._running: dict[str, BatchEntry] = {}
        self._kv_reserved = 0
        self.tokens_generated = 0
        self.prefix_cache = PrefixCache(profile.prefix_cache_blocks)
        self.prefix_queried_tokens = 0
        self.prefix_hit_tokens = 0

    @property
    def n_running(self) -> int:
        return len(self._running)

    @property
    def n_waiting(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return not self._running and not self._waiting

    def kv_usage(self) -> float:
        """KV cache in use (prompt plus tokens generated so far), as a fraction of the budget."""
        used = sum(e.prompt_tokens + e.state.generated for e in self._running.values())
        return min(1.0, used / self._profile.kv_budget_tokens)

    def fits_at_all(self, prompt_tokens: int, state: SequenceState) -> bool:
        return prompt_tokens + state.planned_tokens <= self._profile.kv_budget_tokens

    def submit(
        self,
        request_id: str,
        prompt_tokens: int,
        state: SequenceState,
        blocks: tuple[int, ...] = (),
    ) -> None:
        reserve = prompt_tokens + state.planned_tokens
        self._waiting.append(BatchEntry(request_id, prompt_tokens, state, reserve, blocks))

    def abort(self, request_id: str) -> bool:
        """Drop the sequence wherever it is; False if it is not known (already finished)."""
        entry = self._running.pop(request_id, None)
        if entry is not None:
            self._kv_reserved -= entry.kv_reserved
            return True
        for waiting in self._waiting:
            if waiting.request_id == request_id:
                self._waiting.remove(waiting)
                return True
        return False

    def abort_all(self) -> list[str]:
        ids = [e.request_id for e in self._waiting] + list(self._running)
        self._waiting.clear()
        self._running.clear()
        self._kv_reserved = 0
        return ids

    def admit(self) -> int:
        """Move waiting sequences into the batch, FIFO; return the prefill tokens admitted
        (less what the prefix cache holds of their prompts)."""
        prefill = 0
        while self._waiting and len(self._running) < self._profile.max_batch:
            entry = self._waiting[0]
            if self._kv_reserved + entry.kv_reserved > self._profile.kv_budget_tokens:
                break  # strict FIFO, so a large head-of-line request is not starved
            self._waiting.popleft()
            self._running[entry.request_id] = entry
            self._kv_reserved += entry.kv_reserved
            prefill += entry.prompt_tokens - self._cached(entry)
        return prefill

    def _cached(self, entry: BatchEntry) -> int:
        """Prompt tokens found in the prefix cache (the last one is always run)."""
        if not entry.blocks:
            return 0
        block = self._profile.prefix_block_tokens
        cached = min(self.prefix_cache.admit(entry.blocks) * block, entry.prompt_tokens - 1)
        self.prefix_queried_tokens += len(entry.blocks) * block
        self.prefix_hit_tokens += cached
        return cached

    def decode(self) -> list[DecodeOutput]:
        """One token for every running sequence; finished and faulted ones leave the batch."""
        outputs: list[DecodeOutput] = []
        for entry in list(self._running.values()):
            before = entry.state.generated
            step = entry.state.advance()
            self.tokens_generated += entry.state.generated - before
            if step.fault or step.finish_reason is not None:
                self.abort(entry.request_id)
            outputs.append(
                DecodeOutput(entry.request_id, step, entry.prompt_tokens, entry.state.generated)
            )
        return outputs
