"""The request core of a worker (core layer): validate, build the engine request, run it.

It knows nothing of gRPC: the servicer hands it plain values and converts what it yields.
It times each request (arrival -> first token -> last token), feeds the metrics, and keeps
the usage log (engine_workers.usage_log) that answers what a request generated after its
client went away.

A request's completion tokens are counted once, here, as the engine generates them (its
`GenerationRequest.on_generated`; a backend that does not call it is counted as its deltas
arrive), before any output check sees them: the trailers, the metrics and the usage log
all report this count. So a request cut short counts every token the engine made for it,
those still queued for a handler that stopped taking them (its client left), text an
output check held back and text on its way to the client included (the engine generated
it; it is the cost); a finished one counts the engine's own usage.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from engine_workers.engine import Delta, EngineBackend, GenerationRequest, PromptInput
from engine_workers.metrics import EngineMetrics, RequestTimes
from engine_workers.prompt import (
    ChatTurn,
    SamplingParams,
    ValidatedSampling,
    chat_messages,
    completion_text,
    last_user_text,
    validate_sampling,
)
from engine_workers.usage_log import RequestUsageLog, UsageRecord


@dataclass
class RequestTiming:
    """Monotonic timestamps and token counts of one request, from its arrival in the servicer."""

    arrival: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    last_token: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Its entry in the usage log, when the gateway gave the request an id.
    usage: UsageRecord | None = None
    # The engine counts the request's tokens as it makes them (then deltas are not counted).
    engine_counts: bool = False
    # A message of the answer has gone out (headers alone are not one: a failure after
    # them still reaches the client as an HTTP error, which the gateway bills nothing).
    answered: bool = False

    def generated(self, completion_tokens: int) -> None:
        """The engine's count of the tokens it has made for the request so far."""
        self.completion_tokens = completion_tokens
        self.engine_counts = True

    def engine_ms(self) -> float | None:
        return None if self.last_token is None else (self.last_token - self.arrival) * 1000.0

    def ttft_ms(self) -> float | None:
        return None if self.first_token is None else (self.first_token - self.arrival) * 1000.0


class EngineCore:
    """Turns validated requests into engine sequences for one served model."""

    def __init__(
        self,
        backend: EngineBackend,
        metrics: EngineMetrics,
        *,
        model: str,
        echo: bool,
        usage: RequestUsageLog | None = None,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.model = model
        self.echo = echo
        self.usage = usage if usage is not None else RequestUsageLog()

    def begin(self, gateway_id: str | None) -> RequestTiming:
        """A request has arrived: its timing, recorded in the usage log under the gateway's
        request id (requests without one are not recorded)."""
        timing = RequestTiming()
        if gateway_id:
            timing.usage = self.usage.open(gateway_id, timing)
        return timing

    def chat_request(
        self, request_id: str, turns: Sequence[ChatTurn], params: SamplingParams
    ) -> GenerationRequest:
        sampling = validate_sampling(params, self.model)
        messages = chat_messages(turns)
        prompt = PromptInput(messages=messages)
        return self._build(request_id, prompt, sampling, last_user_text(messages))

    def completion_request(
        self, request_id: str, prompt: object, params: SamplingParams
    ) -> GenerationRequest:
        sampling = validate_sampling(params, self.model)
        text = completion_text(prompt)
        return self._build(request_id, PromptInput(text=text), sampling, text)

    def _build(
        self, request_id: str, prompt: PromptInput, sampling: ValidatedSampling, echo_text: str
    ) -> GenerationRequest:
        rendered = self.backend.render_prompt(prompt)
        return GenerationRequest(
            request_id=request_id,
            prompt=rendered.text,
            prompt_tokens=rendered.token_count,
            prompt_token_ids=rendered.token_ids,
            messages=prompt.messages,
            max_tokens=sampling.max_tokens,
            stop=sampling.stop,
            seed=sampling.seed,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            echo_text=echo_text if self.echo else None,
        )

    def rpc_done(self, request_id: str, timing: RequestTiming) -> None:
        """The request's RPC is over: end the request. One that ended before a message of
        its answer went out (an attempt Envoy gave up on, a failure before the first byte,
        a client that left first) counts as unanswered: the gateway bills the first two
        nothing, the last from this replica's usage record."""
        self.end(request_id, timing)
        if not timing.answered:
            self.metrics.observe_unanswered(timing.prompt_tokens, timing.completion_tokens)

    def end(self, request_id: str, timing: RequestTiming) -> None:
        """The request is over however it ended (its RPC is done, e.g. its client went
        away): stop its sequence now and close its usage record; safe to call more than
        once."""
        self.backend.abort(request_id)
        if timing.usage is not None:
            timing.usage.end()

    async def generate(
        self, request: GenerationRequest, timing: RequestTiming
    ) -> AsyncIterator[Delta]:
        """Run the sequence; however the caller leaves (done, error, cancelled), abort it."""
        self.metrics.observe_prompt(request.prompt_tokens)
        timing.prompt_tokens = request.prompt_tokens
        deltas = self.backend.generate(replace(request, on_generated=timing.generated))
        try:
            async for delta in deltas:
                now = time.perf_counter()
                if timing.first_token is None:
                    timing.first_token = now
                timing.last_token = now
                if delta.text and not timing.engine_counts:
                    timing.completion_tokens += 1
                if delta.usage is not None:
                    timing.prompt_tokens = delta.usage.prompt_tokens
                    timing.completion_tokens = delta.usage.completion_tokens
                yield delta
        finally:
            # Async generators are only closed by the garbage collector unless told to.
            aclose = getattr(deltas, "aclose", None)
            if aclose is not None:
                await aclose()
            self.backend.abort(request.request_id)
            # The engine makes no more tokens: the record is final before the trailers leave.
            if timing.usage is not None:
                timing.usage.end()
            if timing.last_token is not None:
                ttft = None if timing.first_token is None else timing.first_token - timing.arrival
                self.metrics.observe_request(
                    RequestTimes(
                        ttft_seconds=ttft,
                        total_seconds=timing.last_token - timing.arrival,
                        prompt_tokens=timing.prompt_tokens,
                        completion_tokens=timing.completion_tokens,
                    )
                )
