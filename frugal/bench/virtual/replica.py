"""One engine replica in virtual time: the `sim` engine's model, jumped from event to event.

Pure layer (no clock, no asyncio). The engine is the one of engine_workers' sim backend:
a FIFO queue, a running batch bounded by the profile's `max_batch` and KV budget (each
sequence reserves its prompt plus its output when admitted, nothing is evicted), and
steps of `sim_model.step_ms(profile, running, prefill)`: the admitted sequences' prefill
is in the first step of the batch that takes them in, which also gives them their first
token. No jitter: a run is exact and deterministic. With the profile's prefix cache on,
a request's leading blocks found in the replica's cache (engine_workers.backends.prefix_cache)
are not prefilled again.

Between two events the batch does not change, so every step lasts the same: the replica
does not walk step by step but keeps the epoch it is in (when it began, how long its
first and later steps are, how many run) and each sequence's finishing step in a heap.
Its next event is the next finish, or the next step's end when a waiting sequence could
join. A reading at any moment (running sequences, tokens generated so far, the decode-step
tally) is exact, as the engine's own gauges and counters would be.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from control_plane.balancer.load import DecodeCounters, PrefillCounters, RequestCounters
from engine_workers.backends.prefix_cache import PrefixCache
from engine_workers.backends.sim_model import SimProfile, step_ms, warmup_step_ms

# Times are compared with this slack: event times are sums of step durations.
_EPSILON_S = 1e-9


@dataclass(eq=False, slots=True)
class VirtualRequest:
    """One request's sizes and what happened to it (virtual seconds)."""

    index: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    group: str = ""
    replica: int = -1
    first_token_s: float | None = None
    finished_s: float | None = None
    blocks: tuple[int, ...] = ()  # the prompt's block ids (Mooncake's hash_ids), if known
    cached_tokens: int = 0  # of its prompt, found in the replica's prefix cache

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s


@dataclass(slots=True)
class _Epoch:
    start_s: float
    first_step_s: float
    step_s: float
    running: int
    steps_before: int  # the replica's steps done when the epoch began
    prefill_tokens: int  # what its first step prefills (the sequences it took in)

    @property
    def prefills(self) -> bool:
        return self.prefill_tokens > 0

    def decode_steps_in(self, steps: int) -> int:
        """Of its first `steps` steps, those that prefilled nothing."""
        return max(0, steps - 1) if self.prefills else steps


@dataclass(eq=False)
class VirtualReplica:
    profile: SimProfile
    on_finish: Callable[[VirtualRequest], None]
    waiting: deque[VirtualRequest] = field(default_factory=deque)
    _running: dict[int, VirtualRequest] = field(default_factory=dict)
    _finishing: list[tuple[int, int]] = field(default_factory=list)  # (finish step, index)
    _kv_reserved: int = 0
    _steps_done: int = 0
    _tokens_before: int = 0  # tokens generated before the current epoch
    _decode_before: DecodeCounters = field(default_factory=lambda: DecodeCounters(0, 0.0, 0))
    _prefill_before: PrefillCounters = field(default_factory=lambda: PrefillCounters(0, 0.0, 0, 0))
    # The request counters, as plain numbers: they change on every finish.
    _finished: int = 0
    _finished_tokens: int = 0
    _finished_prompt_tokens: int = 0
    _epoch: _Epoch | None = None
    prefix_cache: PrefixCache = field(init=False)

    def __post_init__(self) -> None:
        self.prefix_cache = PrefixCache(self.profile.prefix_cache_blocks)
        # The engine's warm-up, done before the run starts (engine_workers' sim backend).
        steps = self.profile.warmup_steps
        self._decode_before = DecodeCounters(
            steps, steps * warmup_step_ms(self.profile) / 1000.0, steps
        )

    @property
    def idle(self) -> bool:
        return self._epoch is None and not self.waiting

    def running_at(self, now_s: float) -> int:
        """Sequences in the batch (the engine's `num_requests_running` gauge)."""
        return 0 if self._epoch is None else self._epoch.running

    def tokens_at(self, now_s: float) -> int:
        """Tokens generated so far (the engine's generation-token counter)."""
        epoch = self._epoch
        if epoch is None:
            return self._tokens_before
        return self._tokens_before + epoch.running * self._steps_in(epoch, now_s)

    def decode_at(self, now_s: float) -> DecodeCounters:
        """Decode steps so far (the engine's `frugal_engine_decode_steps_total` tally)."""
        epoch = self._epoch
        if epoch is None:
            return self._decode_before
        return _plus_decode(self._decode_before, epoch, self._steps_in(epoch, now_s))

    def prefill_at(self, now_s: float) -> PrefillCounters:
        """Prefill steps so far (the engine's `frugal_engine_prefill_steps_total` tally)."""
        epoch = self._epoch
        if epoch is None:
            return self._prefill_before
        return _plus_prefill(self._prefill_before, epoch, self._steps_in(epoch, now_s))

    @property
    def requests(self) -> RequestCounters:
        """Requests finished here, the tokens they generated and their prompts."""
        return RequestCounters(self._finished, self._finished_tokens, self._finished_prompt_tokens)

    def submit(self, request: VirtualRequest, now_s: float) -> None:
        """Queue `request`; an idle replica takes it in at its next event, now (with any
        other request that comes at the same moment)."""
        self.waiting.append(request)

    def next_event_s(self, now_s: float) -> float | None:
        """When this replica next changes: a sequence finishes, a step ends with a waiting
        sequence that fits in the batch, or (idle) now, if something waits. None when
        idle with nothing to do."""
        epoch = self._epoch
        if epoch is None:
            return now_s if self.waiting else None
        finish_step, _ = self._finishing[0]
        due = self._end_of_step(epoch, finish_step - epoch.steps_before)
        if self.waiting and self._fits(self.waiting[0]):
            done = self._steps_in(epoch, now_s)
            due = min(due, self._end_of_step(epoch, done + 1))
        return due

    def on_event(self, now_s: float) -> None:
        """At a step's end: finished sequences leave, waiting ones join, a new epoch."""
        epoch = self._epoch
        if epoch is None:
            self._begin_epoch(now_s)
            return
        steps = self._steps_in(epoch, now_s)
        self._steps_done = epoch.steps_before + steps
        self._tokens_before += epoch.running * steps
        self._decode_before = _plus_decode(self._decode_before, epoch, steps)
        self._prefill_before = _plus_prefill(self._prefill_before, epoch, steps)
        finished = []
        while self._finishing and self._finishing[0][0] <= self._steps_done:
            finish_step, index = heapq.heappop(self._finishing)
            request = self._running.pop(index)
            self._kv_reserved -= request.prompt_tokens + request.output_tokens
            request.finished_s = self._end_of_step(epoch, finish_step - epoch.steps_before)
            finished.append(request)
            self._finished += 1
            self._finished_tokens += request.output_tokens
            self._finished_prompt_tokens += request.prompt_tokens
        self._begin_epoch(now_s)
        # Told once the replica is whole again: a client may send its next request here.
        for request in finished:
            self.on_finish(request)

    def _fits(self, request: VirtualRequest) -> bool:
        if len(self._running) >= self.profile.max_batch:
            return False
        reserve = request.prompt_tokens + request.output_tokens
        return self._kv_reserved + reserve <= self.profile.kv_budget_tokens or not self._running

    def _begin_epoch(self, now_s: float) -> None:
        prefill = 0
        admitted = []
        while self.waiting and self._fits(self.waiting[0]):
            request = self.waiting.popleft()
            self._kv_reserved += request.prompt_tokens + request.output_tokens
            prefill += request.prompt_tokens - self._cached(request)
            self._running[request.index] = request
            finish_step = self._steps_done + max(1, request.output_tokens)
            heapq.heappush(self._finishing, (finish_step, request.index))
            admitted.append(request)
        if not self._running:
            self._epoch = None
            return
        running = len(self._running)
        first = step_ms(self.profile, running, prefill) / 1000.0
        self._epoch = _Epoch(
            now_s, first, step_ms(self.profile, running, 0) / 1000.0, running, self._steps_done,
            prefill_tokens=prefill,
        )  # fmt: skip
        for request in admitted:
            request.first_token_s = now_s + first

    def _cached(self, request: VirtualRequest) -> int:
        """Prompt tokens the prefix cache saves `request` (its last token is always run)."""
        block = self.profile.prefix_block_tokens
        if block == 0 or not request.blocks:
            return 0
        hits = self.prefix_cache.admit(request.blocks)
        request.cached_tokens = min(hits * block, request.prompt_tokens - 1)
        return request.cached_tokens

    @staticmethod
    def _steps_in(epoch: _Epoch, now_s: float) -> int:
        """Steps of the epoch completed by `now_s`."""
        elapsed = now_s - epoch.start_s + _EPSILON_S
        if elapsed < epoch.first_step_s:
            return 0
        return 1 + math.floor((elapsed - epoch.first_step_s) / epoch.step_s)

    @staticmethod
    def _end_of_step(epoch: _Epoch, step: int) -> float:
        """When the epoch's `step`-th step (1-based) ends."""
        return epoch.start_s + epoch.first_step_s + (step - 1) * epoch.step_s


def _plus_decode(before: DecodeCounters, epoch: _Epoch, steps: int) -> DecodeCounters:
    decode = epoch.decode_steps_in(steps)
    return DecodeCounters(
        steps=before.steps + decode,
        seconds=before.seconds + decode * epoch.step_s,
        sequences=before.sequences + decode * epoch.running,
    )


def _plus_prefill(before: PrefillCounters, epoch: _Epoch, steps: int) -> PrefillCounters:
    """The epoch's first step, once done, if it prefilled."""
    if not epoch.prefills or steps < 1:
        return before
    return PrefillCounters(
        steps=before.steps + 1,
        seconds=before.seconds + epoch.first_step_s,
        sequences=before.sequences + epoch.running,
        tokens=before.tokens + epoch.prefill_tokens,
    )
