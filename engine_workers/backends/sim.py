"""The `sim` backend: a latency-calibrated continuous-batching engine (backend layer, asyncio).

One asyncio task runs the step loop over a pure `BatchScheduler`: admit waiting sequences,
sleep for the step time of `sim_model.step_seconds`, then give every running sequence one
token and hand it to that request's queue. Before it, the engine warms up: the profile's
`warmup_steps` decode steps of one sequence, in its decode-step tally like any others. See
docs/simulator.md for the model and its calibration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from engine_workers.backends.prefix_cache import prompt_blocks
from engine_workers.backends.sim_batch import BatchScheduler, DecodeOutput
from engine_workers.backends.sim_model import (
    SequenceState,
    SimProfile,
    sequence_source,
    step_seconds,
    warmup_step_ms,
)
from engine_workers.engine import (
    DecodeSteps,
    Delta,
    GenerationRequest,
    LoadSnapshot,
    PrefillSteps,
    PrefixCacheTally,
    PromptInput,
    RenderedPrompt,
    TokenUsage,
)
from engine_workers.errors import (
    EngineError,
    EngineFaultError,
    EngineUnavailableError,
    InvalidRequestError,
)
from engine_workers.prompt import render_role_tagged
from engine_workers.tokenizer import tokenize

if TYPE_CHECKING:
    from engine_workers.settings import EngineSettings

logger = logging.getLogger(__name__)

_Event = Delta | EngineError


class SimBackend:
    """Simulated engine replica; see the module docstring for the model."""

    def __init__(self, profile: SimProfile) -> None:
        self._profile = profile
        self._rng = random.Random(profile.seed)
        self._batch = BatchScheduler(profile)
        self._queues: dict[str, asyncio.Queue[_Event]] = {}
        # Each sequence's GenerationRequest.on_generated, told at the step that makes a token.
        self._counters: dict[str, Callable[[int], None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._decode_steps = DecodeSteps()
        self._prefill_steps = PrefillSteps()

    @property
    def profile(self) -> SimProfile:
        return self._profile

    async def start(self) -> None:
        if self._task is None:
            await self._warm_up()
            self._task = asyncio.create_task(self._step_loop(), name="sim-step-loop")

    async def _warm_up(self) -> None:
        """The profile's `warmup_steps`: decode steps of one sequence, counted in the tally."""
        duration = warmup_step_ms(self._profile) * self._profile.time_scale / 1000.0
        for _ in range(self._profile.warmup_steps):
            await asyncio.sleep(duration)
            self._decode_steps = self._decode_steps.add(duration, 1)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for request_id in self._batch.abort_all():
            self._deliver(request_id, EngineUnavailableError("engine stopped"))
        self._queues.clear()
        self._counters.clear()

    def render_prompt(self, prompt: PromptInput) -> RenderedPrompt:
        return render_role_tagged(prompt)

    def load(self) -> LoadSnapshot:
        return LoadSnapshot(
            running=self._batch.n_running,
            waiting=self._batch.n_waiting,
            kv_cache_usage=self._batch.kv_usage(),
            tokens_generated_total=self._batch.tokens_generated,
            decode_steps=self._decode_steps,
            prefill_steps=self._prefill_steps,
            prefix_cache=PrefixCacheTally(
                self._batch.prefix_queried_tokens, self._batch.prefix_hit_tokens
            )
            if self._profile.prefix_block_tokens
            else None,
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        queue = self._enqueue(request)
        try:
            while True:
                event = await queue.get()
                if isinstance(event, EngineError):
                    raise event
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            self.abort(request.request_id)

    def abort(self, request_id: str) -> None:
        if self._batch.abort(request_id):
            logger.debug("aborted sequence %s", request_id)
        self._queues.pop(request_id, None)
        self._counters.pop(request_id, None)

    def _enqueue(self, request: GenerationRequest) -> asyncio.Queue[_Event]:
        if self._task is None:
            raise EngineUnavailableError("engine is not running")
        if request.request_id in self._queues:
            raise InvalidRequestError(f"duplicate request id {request.request_id!r}")
        seed = request.seed if request.seed is not None else self._rng.randrange(2**31)
        state = SequenceState(
            sequence_source(echo_text=request.echo_text, seed=seed, profile=self._profile),
            max_tokens=request.max_tokens,
            stops=request.stop,
            fault_after_tokens=self._profile.fault_after_tokens,
        )
        if not self._batch.fits_at_all(request.prompt_tokens, state):
            raise InvalidRequestError(
                f"prompt ({request.prompt_tokens} tokens) plus output exceeds the engine's "
                f"KV budget of {self._profile.kv_budget_tokens} tokens"
            )
        queue: asyncio.Queue[_Event] = asyncio.Queue()
        self._queues[request.request_id] = queue
        if request.on_generated is not None:
            self._counters[request.request_id] = request.on_generated
        blocks: tuple[int, ...] = ()
        if self._profile.prefix_block_tokens:
            blocks = prompt_blocks(tokenize(request.prompt), self._profile.prefix_block_tokens)
        self._batch.submit(request.request_id, request.prompt_tokens, state, blocks)
        self._wake.set()
        return queue

    async def _step_loop(self) -> None:
        loop = asyncio.get_running_loop()
        # Steps are scheduled on an absolute timeline, so the ~1 ms that each asyncio.sleep
        # oversleeps does not add up; after a stall the timeline restarts instead of bursting.
        step_end = loop.time()
        while True:
            if self._batch.idle:
                self._wake.clear()
                await self._wake.wait()
                step_end = loop.time()
                continue
            prefill_tokens = self._batch.admit()
            n_running = self._batch.n_running
            duration = step_seconds(self._profile, n_running, prefill_tokens, self._rng)
            step_end = max(step_end + duration, loop.time())
            await asyncio.sleep(step_end - loop.time())
            # The model's duration, not the wall clock's: asyncio's oversleep is the
            # simulation's, and the timeline above makes up for it.
            if prefill_tokens > 0:
                self._prefill_steps = self._prefill_steps.add(duration, n_running, prefill_tokens)
            elif n_running > 0:
                self._decode_steps = self._decode_steps.add(duration, n_running)
            for output in self._batch.decode():
                self._publish(output)

    def _publish(self, output: DecodeOutput) -> None:
        counter = self._counters.get(output.request_id)
        if counter is not None:
            counter(output.completion_tokens)
        step = output.step
        if step.fault:
            error = EngineFaultError(f"engine fault after {output.completion_tokens} tokens")
            self._deliver(output.request_id, error)
        elif step.finish_reason is not None:
            usage = TokenUsage(output.prompt_tokens, output.completion_tokens)
            self._deliver(output.request_id, Delta(step.text, step.finish_reason, usage))
        elif step.text:
            self._deliver(output.request_id, Delta(step.text))

    def _deliver(self, request_id: str, event: _Event) -> None:
        queue = self._queues.get(request_id)
        if queue is not None:
            queue.put_nowait(event)


def build_sim_backend(settings: EngineSettings) -> SimBackend:
    return SimBackend(settings.sim)
