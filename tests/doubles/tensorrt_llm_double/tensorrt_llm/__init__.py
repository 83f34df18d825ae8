"""TEST DOUBLE of the TensorRT-LLM 1.2 LLM API (tests only; this is not TensorRT-LLM).

The `trtllm` backend cannot run here (no GPU; PyPI holds only a stub that fetches NVIDIA's
wheel), so its tests put this package on sys.path as `tensorrt_llm`. It copies exactly the
surface the backend uses, shaped as in the real sources (tensorrt_llm/llmapi/llm.py,
tensorrt_llm/executor/result.py):

- `LLM(model, tokenizer=None, **kwargs)` blocks while it "loads" and refuses unknown kwargs;
- `generate_async(token_ids, SamplingParams, streaming=True)` returns one `RequestOutput`,
  mutated in place each time it is async-iterated: `outputs[0]` has `text`, `token_ids`,
  `text_diff`, `token_ids_diff` and, on the last step, `finish_reason` ("stop" at the
  end-of-sequence token or a stop string, which is dropped from the output; "length" at
  max_tokens; "cancelled" after `abort()`);
- `get_stats_async(timeout)` returns one shared IterationResult: camelCase dicts, one per
  engine iteration, published only with `enable_iter_perf_stats=True`; it ends when none
  arrive within the timeout and stays ended until a new request is submitted. As the
  PyTorch executor fills them (py_executor.py `_update_iter_stats`), a sequence is a
  context request in the iteration that admits it (`numCtxTokens`: its prompt) and a
  generation request after, and `iterLatencyMS` is the iteration's time;
- `llm.tokenizer` has `encode`, `decode` and `apply_chat_template` (a word per token).

What it cannot prove: anything about kernels, TP/PP/EP sharding, fp8, real in-flight batching
or scheduling policies, memory and KV block accounting, timing, or how the real engine fills
its stats. Its batching is one token per running sequence per step, up to max_batch_size.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


@dataclass
class DoubleSettings:
    """Knobs of the double, reset by the tests' fixture."""

    load_seconds: float = 0.05
    step_seconds: float = 0.002
    prefill_seconds_per_token: float = 0.0  # added to an iteration for each prompt token
    tokens_before_eos: int = 10
    kv_capacity_tokens: int = 4096
    # The stats iterator loses a cancel and goes on waiting, as asyncio.wait_for does in
    # Python 3.11 when the cancel meets a get that has just completed (bpo-42130).
    stats_iterator_loses_cancels: bool = False


settings = DoubleSettings()


class WordTokenizer:
    """A tokenizer with one id per whitespace-separated word."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._words: list[str] = []

    def encode(self, text: str) -> list[int]:
        return [self._id(word) for word in text.split()]

    def decode(self, token_ids: list[int]) -> str:
        return " ".join(self._words[i] for i in token_ids)

    def apply_chat_template(
        self,
        conversation: list[dict[str, str]],
        *,
        add_generation_prompt: bool = False,
        tokenize: bool = True,
    ) -> str | list[int]:
        text = " ".join(f"<|{m['role']}|> {m['content']}" for m in conversation)
        if add_generation_prompt:
            text += " <|assistant|>"
        return self.encode(text) if tokenize else text

    def _id(self, word: str) -> int:
        if word not in self._ids:
            self._ids[word] = len(self._words)
            self._words.append(word)
        return self._ids[word]


@dataclass(kw_only=True)
class SamplingParams:
    max_tokens: int = 32
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    _last_text_len: int = 0
    _last_token_ids_len: int = 0

    @property
    def text_diff(self) -> str:
        return self.text[self._last_text_len :]

    @property
    def token_ids_diff(self) -> list[int]:
        return self.token_ids[self._last_token_ids_len :]


@dataclass(frozen=True)
class _Response:
    new_token_ids: tuple[int, ...]
    finish_reason: str | None


class RequestOutput:
    """One request's result: async-iterating it applies the engine's next response."""

    def __init__(self, engine: _Engine, request_id: int, tokenizer: WordTokenizer) -> None:
        self.request_id = request_id
        self.outputs = [CompletionOutput(0)]
        self._engine = engine
        self._tokenizer = tokenizer
        self._queue: asyncio.Queue[_Response] = asyncio.Queue()
        self._done = False
        self._aborted = False

    @property
    def finished(self) -> bool:
        return self._done

    def aborted(self) -> bool:
        return self._aborted

    def abort(self) -> None:
        self._engine.abort_request(self.request_id)
        self._aborted = True

    def __aiter__(self) -> RequestOutput:
        return self

    async def __anext__(self) -> RequestOutput:
        if self._done:
            raise StopAsyncIteration
        response = await self._queue.get()
        output = self.outputs[0]
        output._last_token_ids_len = len(output.token_ids)
        output.token_ids.extend(response.new_token_ids)
        output._last_text_len = len(output.text)
        output.text = self._tokenizer.decode(output.token_ids)
        output.finish_reason = response.finish_reason
        self._done = response.finish_reason is not None
        return self


class IterationResult:
    """The shared async iterable of iteration stats (JSON strings, parsed on the way out)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._done = False
        self._timeout = 2.0

    def set_timeout(self, timeout: float) -> None:
        self._timeout = timeout

    def mark_undone(self) -> None:
        self._done = False

    def __aiter__(self) -> IterationResult:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._done:
            raise StopAsyncIteration
        while True:
            try:
                data = await asyncio.wait_for(self.queue.get(), self._timeout)
                break
            except TimeoutError:
                self._done = True
                raise StopAsyncIteration from None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not settings.stats_iterator_loses_cancels or task is None:
                    raise
                task.uncancel()
        parsed: dict[str, Any] = json.loads(data)
        return parsed


async def _no_stats() -> AsyncIterator[dict[str, Any]]:
    """The empty iterable the real LLM returns before any request was submitted."""
    return
    yield {}


@dataclass
class _Sequence:
    output: RequestOutput
    prompt_tokens: int
    params: SamplingParams
    generated: list[int] = field(default_factory=list)


class _Engine:
    """The step loop: admit up to max_batch_size sequences, give each one token a step."""

    def __init__(self, llm: LLM, kwargs: Mapping[str, Any]) -> None:
        self._llm = llm
        self._max_batch = int(kwargs.get("max_batch_size", 2048))
        kv = kwargs.get("kv_cache_config")
        self._tokens_per_block = kv.tokens_per_block if kv is not None else 32
        self._stats_enabled = bool(kwargs.get("enable_iter_perf_stats", False))
        self._queued: dict[int, _Sequence] = {}
        self._active: dict[int, _Sequence] = {}
        self._wake = asyncio.Event()
        self._iteration = 0
        self.stats: IterationResult | None = None
        self.task = asyncio.get_running_loop().create_task(self._run())

    @property
    def unfinished(self) -> int:
        return len(self._queued) + len(self._active)

    def submit(self, sequence: _Sequence) -> None:
        if self._stats_enabled:
            if self.stats is None:
                self.stats = IterationResult()
            self.stats.mark_undone()
        self._queued[sequence.output.request_id] = sequence
        self._wake.set()

    def abort_request(self, request_id: int) -> None:
        sequence = self._queued.pop(request_id, None) or self._active.pop(request_id, None)
        if sequence is not None:
            sequence.output._queue.put_nowait(_Response((), "cancelled"))

    async def _run(self) -> None:
        while True:
            if not self._queued and not self._active:
                self._wake.clear()
                await self._wake.wait()
            admitted = []
            while self._queued and len(self._active) < self._max_batch:
                request_id = next(iter(self._queued))
                self._active[request_id] = self._queued.pop(request_id)
                admitted.append(self._active[request_id])
            started = time.perf_counter()
            ctx_tokens = sum(s.prompt_tokens for s in admitted)
            await asyncio.sleep(
                settings.step_seconds + settings.prefill_seconds_per_token * ctx_tokens
            )
            self._iteration += 1
            self._publish_stats(len(admitted), ctx_tokens, time.perf_counter() - started)
            for request_id, sequence in list(self._active.items()):
                response = self._step(sequence)
                if response.finish_reason is not None:
                    del self._active[request_id]
                sequence.output._queue.put_nowait(response)

    def _step(self, sequence: _Sequence) -> _Response:
        if len(sequence.generated) >= settings.tokens_before_eos:
            return _Response((), "stop")  # the end-of-sequence id is not part of the output
        word = WORDS[(len(sequence.generated) + (sequence.params.seed or 0)) % len(WORDS)]
        token = self._llm.tokenizer.encode(word)[0]
        tokenizer = self._llm.tokenizer
        before = tokenizer.decode(sequence.generated)
        after = tokenizer.decode([*sequence.generated, token])
        stops = sequence.params.stop
        for stop in [stops] if isinstance(stops, str) else stops or []:
            if stop in after and stop not in before:
                return _Response((), "stop")
        sequence.generated.append(token)
        if len(sequence.generated) >= sequence.params.max_tokens:
            return _Response((token,), "length")
        return _Response((token,), None)

    def _publish_stats(self, context: int, ctx_tokens: int, seconds: float) -> None:
        if self.stats is None:
            return
        per_block = self._tokens_per_block
        used = sum(
            -(-(s.prompt_tokens + len(s.generated) + 1) // per_block) for s in self._active.values()
        )
        stats: dict[str, Any] = {
            "iter": self._iteration,
            "timestamp": f"{time.time():.6f}",
            "iterLatencyMS": seconds * 1000.0,
            "numActiveRequests": len(self._active),
            "numQueuedRequests": len(self._queued),
            "maxNumActiveRequests": self._max_batch,
            "inflightBatchingStats": {
                "numScheduledRequests": len(self._active),
                "numContextRequests": context,
                "numGenRequests": len(self._active) - context,
                "numPausedRequests": 0,
                "numCtxTokens": ctx_tokens,
            },
            "kvCacheStats": {
                "maxNumBlocks": settings.kv_capacity_tokens // per_block,
                "usedNumBlocks": used,
                "freeNumBlocks": settings.kv_capacity_tokens // per_block - used,
                "tokensPerBlock": per_block,
                "cacheHitRate": 0.0,
            },
        }
        self.stats.queue.put_nowait(json.dumps(stats))


_ALLOWED_KWARGS = frozenset(
    {
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "moe_expert_parallel_size",
        "moe_tensor_parallel_size",
        "max_batch_size",
        "max_num_tokens",
        "kv_cache_config",
        "scheduler_config",
        "enable_iter_perf_stats",
    }
)


class LLM:
    """Records how it was built (`instances`, newest last) for the tests to inspect."""

    instances: ClassVar[list[LLM]] = []

    def __init__(self, model: str, tokenizer: str | None = None, **kwargs: Any) -> None:
        for key in kwargs:
            if key not in _ALLOWED_KWARGS:
                raise ValueError(f"{self.__class__.__name__} got invalid argument: {key}")
        self.model = model
        self.tokenizer_path = tokenizer
        self.kwargs = kwargs
        self.built_on_main_thread = threading.current_thread() is threading.main_thread()
        self.tokenizer = WordTokenizer()
        self.shut_down = False
        self._engine: _Engine | None = None
        self._next_id = 0
        time.sleep(settings.load_seconds)  # the real constructor loads weights here
        LLM.instances.append(self)

    def generate_async(
        self,
        inputs: list[int] | str,
        sampling_params: SamplingParams | None = None,
        streaming: bool = False,
    ) -> RequestOutput:
        if self._engine is None:
            self._engine = _Engine(self, self.kwargs)
        token_ids = self.tokenizer.encode(inputs) if isinstance(inputs, str) else inputs
        params = sampling_params or SamplingParams()
        self._next_id += 1
        output = RequestOutput(self._engine, self._next_id, self.tokenizer)
        self._engine.submit(_Sequence(output, len(token_ids), params))
        return output

    def get_stats_async(self, timeout: float = 2) -> AsyncIterator[dict[str, Any]]:
        if self._engine is None or self._engine.stats is None:
            return _no_stats()
        self._engine.stats.set_timeout(timeout)
        return self._engine.stats

    def unfinished_requests(self) -> int:
        """Sequences the engine still queues or runs (a test probe; not in the real API)."""
        return 0 if self._engine is None else self._engine.unfinished

    def shutdown(self) -> None:
        self.shut_down = True
        if self._engine is not None:
            task = self._engine.task
            task.get_loop().call_soon_threadsafe(task.cancel)
