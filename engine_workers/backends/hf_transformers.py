"""The `transformers` backend: a real model on CPU or GPU behind transformers' own continuous
batching (backend layer: torch and a manager thread; the token maths are in token_stream.py).

The manager runs the batch on a thread of its own and hands each streamed output to a
handler on this event loop (`register_result_handler`, registered before `add_request`, as
its docs require). Each output holds the sequence's whole token list so far;
`OutputTracker` turns it into deltas, stop strings and a finish reason. What transformers
does not do, this module does: a request cancelled for a stop string gets its final delta
from here (the manager sends none), a cancelled request's handler is dropped
(cb_internals), and the KV cache is sized from the profile, not from free RAM.

Sampling: the manager decides greedy vs sampling once, and applies temperature / top-p /
top-k per request only through per-request logits processors, which exist only when the
generation config has non-neutral values for them. So the manager samples, with processors
built from placeholder values, and every request sends its own three values: temperature 0
is greedy as top-k 1. A per-request seed cannot be honoured (every sequence draws from one
generator) and is refused with a 400 that says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from engine_workers.backends.cb_internals import drop_result_handler, read_load
from engine_workers.backends.model_files import model_directory
from engine_workers.backends.token_stream import OutputTracker
from engine_workers.backends.transformers_parameters import TransformersParameters
from engine_workers.engine import (
    Delta,
    GenerationRequest,
    LoadSnapshot,
    PromptInput,
    RenderedPrompt,
    TokenUsage,
)
from engine_workers.errors import (
    EngineFaultError,
    EngineUnavailableError,
    InvalidRequestError,
)

if TYPE_CHECKING:
    from engine_workers.settings import EngineSettings

logger = logging.getLogger(__name__)

# Placeholders that make the manager build its per-request processors (see the docstring);
# no request ever samples with them.
_PROCESSOR_PLACEHOLDERS = {"temperature": 0.5, "top_p": 0.5, "top_k": 50}
STOP_TIMEOUT_S = 10.0


class TransformersBackend:
    """One replica: a model, its tokenizer and a continuous-batching manager."""

    def __init__(self, parameters: TransformersParameters) -> None:
        self.parameters = parameters
        self._tokenizer: Any = None
        self._manager: Any = None
        self._eos_ids: frozenset[int] = frozenset()
        self._context_tokens = 0
        self._vocab_size = 0
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        self._tokens_generated = 0

    async def start(self) -> None:
        if self._manager is None:
            await asyncio.to_thread(self._load)
            await self._warm_up()

    async def _warm_up(self) -> None:
        """One token generated before the worker reports SERVING: the first step builds the
        batch processor and its cache (~2 s here), which no client request should wait for."""
        prompt = self.render_prompt(PromptInput(text="Hello"))
        warm_up = GenerationRequest(
            request_id="frugal-warm-up",
            prompt=prompt.text,
            prompt_tokens=prompt.token_count,
            prompt_token_ids=prompt.token_ids,
            max_tokens=1,
            temperature=0.0,
        )
        async for _ in self.generate(warm_up):
            pass

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        p = self.parameters
        if p.threads is not None:
            torch.set_num_threads(p.threads)
        directory = model_directory(p.model)
        self._tokenizer = AutoTokenizer.from_pretrained(directory)
        model: Any = AutoModelForCausalLM.from_pretrained(
            directory, dtype=getattr(torch, p.dtype), attn_implementation=p.attn_implementation
        )
        model = model.to(p.device)
        self._eos_ids = _eos_ids(model.generation_config.eos_token_id, self._tokenizer)
        self._context_tokens = int(model.config.max_position_embeddings)
        self._vocab_size = int(model.config.vocab_size)
        generation = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=True,
            eos_token_id=sorted(self._eos_ids),
            pad_token_id=self._tokenizer.pad_token_id,
            max_new_tokens=p.default_max_tokens,
            **_PROCESSOR_PLACEHOLDERS,
        )
        batching = ContinuousBatchingConfig(
            num_blocks=p.num_blocks,
            page_size=p.page_size,
            max_batch_tokens=p.max_batch_tokens,
            max_requests_per_batch=p.max_requests_per_batch,
            per_request_processors=True,
            allow_block_sharing=True,
        )
        self._manager = model.init_continuous_batching(
            generation_config=generation, continuous_batching_config=batching
        )
        self._manager.start()
        logger.info(
            "transformers backend: %s (%s on %s), KV cache %d tokens in pages of %d",
            directory,
            p.dtype,
            p.device,
            p.kv_cache_tokens,
            p.page_size,
        )

    async def stop(self) -> None:
        manager, self._manager = self._manager, None
        for queue in self._queues.values():
            queue.put_nowait(EngineUnavailableError("engine stopped"))
        self._queues.clear()
        if manager is not None:
            await asyncio.to_thread(
                manager.stop, block=True, timeout=STOP_TIMEOUT_S, hard_stop=True
            )

    def render_prompt(self, prompt: PromptInput) -> RenderedPrompt:
        tokenizer = self._require(self._tokenizer)
        if prompt.messages is not None:
            chat = [{"role": m.role, "content": m.content} for m in prompt.messages]
            text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            ids = tokenizer.encode(text, add_special_tokens=False)
        else:
            text = prompt.text or ""
            ids = tokenizer.encode(text)
        return RenderedPrompt(text=text, token_count=len(ids), token_ids=tuple(ids))

    def load(self) -> LoadSnapshot:
        if self._manager is None:
            return LoadSnapshot(0, 0, 0.0, self._tokens_generated)
        figures = read_load(self._manager)
        return LoadSnapshot(
            running=figures.running,
            waiting=figures.waiting,
            kv_cache_usage=figures.kv_cache_usage,
            tokens_generated_total=self._tokens_generated,
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        manager = self._require(self._manager)
        ids = list(request.prompt_token_ids or ())
        max_tokens = self._max_tokens(request, len(ids))
        sampling = _sampling(request, self.parameters, self._vocab_size)
        tracker = OutputTracker(self._decode, self._eos_ids, request.stop, max_tokens)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        rid = request.request_id
        if rid in self._queues:
            raise InvalidRequestError(f"duplicate request id {rid!r}")
        self._queues[rid] = queue
        try:
            manager.register_result_handler(rid, queue.put_nowait)
            if manager.add_request(ids, rid, max_tokens, streaming=True, **sampling) is None:
                raise EngineUnavailableError("the engine is not accepting requests")
            while tracker.finish_reason is None:
                output = await queue.get()
                if isinstance(output, Exception):
                    raise output
                if output.error is not None:
                    raise EngineFaultError(f"generation failed: {output.error}")
                before = tracker.completion_tokens
                step = tracker.update(output.generated_tokens, output.is_finished())
                self._tokens_generated += tracker.completion_tokens - before
                if step.cancel:  # a stop string: the manager would go on to max_tokens
                    self._release(rid, cancel=True)
                usage = (
                    TokenUsage(len(ids), tracker.completion_tokens) if step.finish_reason else None
                )
                if step.text or step.finish_reason:
                    yield Delta(step.text, step.finish_reason, usage)
        finally:
            self._release(rid, cancel=tracker.finish_reason is None)

    def abort(self, request_id: str) -> None:
        self._release(request_id, cancel=True)

    def _release(self, request_id: str, *, cancel: bool) -> None:
        """Forget a sequence; `cancel`: it may still be generating, so stop it and drop its
        result handler (the manager drops one only when its request finishes)."""
        if self._queues.pop(request_id, None) is None or self._manager is None:
            return
        if cancel:
            self._manager.cancel_request(request_id)
            drop_result_handler(self._manager, request_id)

    def _max_tokens(self, request: GenerationRequest, prompt_tokens: int) -> int:
        room = min(self._context_tokens, self.parameters.kv_cache_tokens) - prompt_tokens
        if room < 1:
            raise InvalidRequestError(
                f"prompt ({prompt_tokens} tokens) leaves no room in this engine's "
                f"{min(self._context_tokens, self.parameters.kv_cache_tokens)}-token context"
            )
        if request.max_tokens is None:
            return min(room, self.parameters.default_max_tokens)
        if request.max_tokens > room:
            raise InvalidRequestError(
                f"max_tokens: prompt ({prompt_tokens} tokens) plus max_tokens "
                f"({request.max_tokens}) exceeds this engine's context of {room + prompt_tokens}"
            )
        return request.max_tokens

    def _decode(self, ids: Any) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    @staticmethod
    def _require(value: Any) -> Any:
        if value is None:
            raise EngineUnavailableError("engine is not running")
        return value


def _sampling(
    request: GenerationRequest, parameters: TransformersParameters, vocab_size: int
) -> dict[str, Any]:
    """The per-request processor values (the manager type-checks them: floats and an int);
    top-k over the whole vocabulary keeps every token."""
    if request.seed is not None:
        raise InvalidRequestError(
            "seed: not supported by this engine (transformers continuous batching draws every "
            "sequence from one random generator, so one request cannot be seeded)"
        )
    temperature = parameters.temperature if request.temperature is None else request.temperature
    top_p = parameters.top_p if request.top_p is None else request.top_p
    if not 0 <= temperature <= 2:
        raise InvalidRequestError("temperature: must be between 0 and 2")
    if not 0 < top_p <= 1:
        raise InvalidRequestError("top_p: must be greater than 0 and at most 1")
    if temperature == 0:
        return {"temperature": 1.0, "top_p": 1.0, "top_k": 1}
    return {"temperature": float(temperature), "top_p": float(top_p), "top_k": vocab_size}


def _eos_ids(configured: int | list[int] | None, tokenizer: Any) -> frozenset[int]:
    ids = {configured} if isinstance(configured, int) else set(configured or ())
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def build_transformers_backend(settings: EngineSettings) -> TransformersBackend:
    return TransformersBackend(TransformersParameters.model_validate(settings.parameters))
