"""The `trtllm` backend: TensorRT-LLM's LLM API (1.2, PyTorch backend) behind a worker
(backend layer, asyncio).

`tensorrt_llm` is imported only in `start`, so the registry, `frugal up` and these functions'
tests never load it. The LLM constructor loads the weights and blocks, so it runs in a thread.
A sequence is `LLM.generate_async(token_ids, SamplingParams, streaming=True)`: one
`RequestOutput`, mutated in place each step and async-iterated, whose `outputs[0]` carries
`text_diff`, `token_ids_diff` and, at the end, `finish_reason`. Load comes from the engine's
iteration stats (`get_stats_async`, camelCase dicts), drained by a background task, since
`load()` must answer at once. Each drained iteration also goes into the decode-step and
prefill-step tallies the adaptive balancer fits (`fold_iteration`): an iteration that ran a
context request is a prefill step of its `numCtxTokens`, one that ran only generation
requests a decode step, each timed by its `iterLatencyMS`.

The pure parts (profile -> LLM arguments, request -> SamplingParams arguments, stats ->
LoadSnapshot, finish reasons) are module functions, tested without any engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from engine_workers.backends.trtllm_parameters import TrtllmParameters
from engine_workers.engine import (
    DecodeSteps,
    Delta,
    GenerationRequest,
    LoadSnapshot,
    PrefillSteps,
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

INSTALL_HINT = (
    "the trtllm backend needs TensorRT-LLM 1.2, which is not installed here: on a CUDA host run "
    "`pip install --extra-index-url https://pypi.nvidia.com tensorrt_llm` (PyPI itself only "
    "holds a stub), or run the worker in NVIDIA's release container "
    "nvcr.io/nvidia/tensorrt-llm/release; see docs/trtllm.md"
)

_POLICIES = {
    "guaranteed_no_evict": "GUARANTEED_NO_EVICT",
    "max_utilization": "MAX_UTILIZATION",
}


class TrtllmStartError(RuntimeError):
    """The worker cannot start its engine (package missing, checkpoint not as declared)."""


@dataclass(frozen=True, slots=True)
class LlmArguments:
    """What `LLM(...)` is called with, as plain data."""

    options: Mapping[str, Any]  # keyword arguments of LLM() besides the two configs
    kv_cache: Mapping[str, Any]  # keyword arguments of KvCacheConfig()
    capacity_scheduler_policy: str  # a member name of CapacitySchedulerPolicy


def llm_arguments(parameters: TrtllmParameters) -> LlmArguments:
    """The LLM API arguments of a group profile (field names of TorchLlmArgs, llm_args.py)."""
    options: dict[str, Any] = {
        "model": parameters.model,
        "tensor_parallel_size": parameters.tensor_parallel_size,
        "pipeline_parallel_size": parameters.pipeline_parallel_size,
        "max_batch_size": parameters.max_batch_size,
        "max_num_tokens": parameters.max_num_tokens,
        # Without it the PyTorch backend publishes no iteration stats, hence no load.
        "enable_iter_perf_stats": True,
    }
    optional = {
        "tokenizer": parameters.tokenizer,
        "moe_expert_parallel_size": parameters.moe_expert_parallel_size,
        "moe_tensor_parallel_size": parameters.moe_tensor_parallel_size,
    }
    options.update({name: value for name, value in optional.items() if value is not None})
    kv_cache = {
        "free_gpu_memory_fraction": parameters.free_gpu_memory_fraction,
        "enable_block_reuse": parameters.enable_block_reuse,
        "dtype": parameters.kv_cache_dtype,
        "tokens_per_block": parameters.tokens_per_block,
    }
    return LlmArguments(options, kv_cache, _POLICIES[parameters.scheduler_policy])


def sampling_arguments(request: GenerationRequest, default_max_tokens: int) -> dict[str, Any]:
    """SamplingParams keyword arguments; unset fields keep TensorRT-LLM's defaults."""
    arguments: dict[str, Any] = {"max_tokens": request.max_tokens or default_max_tokens}
    if request.stop:
        arguments["stop"] = list(request.stop)
    for name in ("temperature", "top_p", "seed"):
        value = getattr(request, name)
        if value is not None:
            arguments[name] = value
    return arguments


def openai_finish_reason(reason: str) -> str:
    """OpenAI's finish_reason for CompletionOutput.finish_reason, or the error it stands for.

    "cancelled" is an abort (ours, or the engine dropping the sequence, e.g. at shutdown) and
    "timeout" the engine's own deadline; neither is an answer, so the stream ends in an error.
    """
    if reason in ("stop", "length"):
        return reason
    if reason == "cancelled":
        raise EngineUnavailableError("the engine cancelled the sequence")
    if reason == "timeout":
        raise EngineFaultError("the engine timed the sequence out")
    raise EngineFaultError(f"the engine ended the sequence with finish reason {reason!r}")


@dataclass(frozen=True, slots=True)
class StepTally:
    """The engine's decode and prefill steps so far, from its iteration stats."""

    decode: DecodeSteps = field(default_factory=DecodeSteps)
    prefill: PrefillSteps = field(default_factory=PrefillSteps)


def fold_iteration(tally: StepTally, stats: Mapping[str, Any]) -> StepTally:
    """The tally with one more iteration (IterationStats' JSON form) in it.

    The PyTorch executor fills `inflightBatchingStats` from the batch it scheduled
    (py_executor.py `_update_iter_stats`): `numContextRequests` and `numCtxTokens` (prompt
    tokens computed, a chunk of a long prompt under chunked prefill), `numGenRequests`,
    `numScheduledRequests`; `iterLatencyMS` is the iteration's time. An iteration without
    a time or without a scheduled request says nothing and is left out. The executor keeps
    a bounded list of stats and drops the oldest when it is not drained in time; the
    tally then misses steps, but its means (step time, batch, tokens per step) stay right.
    """
    batching = stats.get("inflightBatchingStats") or {}
    seconds = float(stats.get("iterLatencyMS", 0.0)) / 1000.0
    context = int(batching.get("numContextRequests", 0))
    generation = int(batching.get("numGenRequests", 0))
    scheduled = int(batching.get("numScheduledRequests", context + generation))
    if seconds <= 0 or scheduled <= 0:
        return tally
    if context > 0:
        tokens = int(batching.get("numCtxTokens", 0))
        return StepTally(tally.decode, tally.prefill.add(seconds, scheduled, tokens))
    return StepTally(tally.decode.add(seconds, scheduled), tally.prefill)


def load_snapshot(
    stats: Mapping[str, Any] | None,
    *,
    in_flight: int,
    tokens_generated_total: int,
    tally: StepTally | None = None,
) -> LoadSnapshot:
    """The load gauges from the last iteration stats (IterationStats' JSON form), and the
    step tallies when given.

    The engine publishes stats only for iterations it runs, so the last ones go stale once
    it is idle; with no sequence in flight the worker reports an idle engine instead.
    """
    decode = tally.decode if tally is not None else None
    prefill = tally.prefill if tally is not None else None
    if stats is None or in_flight == 0:
        return LoadSnapshot(
            0, 0, 0.0, tokens_generated_total, decode_steps=decode, prefill_steps=prefill
        )
    batching = stats.get("inflightBatchingStats") or {}
    kv = stats.get("kvCacheStats") or {}
    max_blocks = int(kv.get("maxNumBlocks", 0))
    used = int(kv.get("usedNumBlocks", 0)) / max_blocks if max_blocks > 0 else 0.0
    return LoadSnapshot(
        running=int(stats.get("numActiveRequests", 0)),
        # Paused sequences (evicted under MAX_UTILIZATION) wait to be scheduled again.
        waiting=int(stats.get("numQueuedRequests", 0)) + int(batching.get("numPausedRequests", 0)),
        kv_cache_usage=min(max(used, 0.0), 1.0),
        tokens_generated_total=tokens_generated_total,
        decode_steps=decode,
        prefill_steps=prefill,
    )


def token_ids_of(encoded: object) -> tuple[int, ...]:
    """Token ids from apply_chat_template(tokenize=True): a list, or a BatchEncoding-like
    mapping with input_ids (transformers 5 returns a dict by default)."""
    if isinstance(encoded, Mapping):
        encoded = encoded["input_ids"]
    if not isinstance(encoded, list | tuple) or not all(isinstance(i, int) for i in encoded):
        raise EngineFaultError("the tokenizer returned no token ids for the chat template")
    return tuple(encoded)


def checkpoint_declares_fp8(model_dir: Path) -> bool:
    """Whether a checkpoint directory says its weights are fp8 (ModelOpt or HF's format)."""
    modelopt = model_dir / "hf_quant_config.json"
    if modelopt.is_file():
        algo = json.loads(modelopt.read_text()).get("quantization", {}).get("quant_algo")
        return str(algo).upper() == "FP8"
    config = model_dir / "config.json"
    if config.is_file():
        quantization = json.loads(config.read_text()).get("quantization_config") or {}
        return str(quantization.get("quant_method", "")).lower() == "fp8"
    return False


def import_llmapi() -> Any:
    """`tensorrt_llm.llmapi`, which exports LLM, SamplingParams and the config classes."""
    try:
        return importlib.import_module("tensorrt_llm.llmapi")
    except ImportError as error:
        raise TrtllmStartError(f"{INSTALL_HINT} ({error})") from error


class _Completion(Protocol):
    @property
    def text_diff(self) -> str: ...
    @property
    def token_ids_diff(self) -> list[int]: ...
    @property
    def token_ids(self) -> list[int]: ...
    @property
    def finish_reason(self) -> str | None: ...


class _RequestOutput(Protocol):
    @property
    def outputs(self) -> list[_Completion]: ...
    @property
    def finished(self) -> bool: ...
    def abort(self) -> None: ...
    def __aiter__(self) -> AsyncIterator[_RequestOutput]: ...


class _Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def apply_chat_template(
        self, conversation: list[dict[str, str]], *, add_generation_prompt: bool, tokenize: bool
    ) -> object: ...


class _Llm(Protocol):
    @property
    def tokenizer(self) -> _Tokenizer: ...
    def generate_async(
        self, inputs: list[int] | str, sampling_params: object, *, streaming: bool
    ) -> _RequestOutput: ...
    def get_stats_async(self, timeout: float) -> AsyncIterator[dict[str, Any]]: ...
    def shutdown(self) -> None: ...


class TrtllmBackend:
    """One TensorRT-LLM engine (all of its TP x PP ranks) behind one worker."""

    def __init__(self, parameters: TrtllmParameters) -> None:
        self._parameters = parameters
        self._llmapi: Any = None
        self._llm: _Llm | None = None
        self._outputs: dict[str, _RequestOutput] = {}
        self._stats: Mapping[str, Any] | None = None
        self._tally = StepTally()
        self._tokens_generated = 0
        self._stats_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def parameters(self) -> TrtllmParameters:
        return self._parameters

    async def start(self) -> None:
        if self._llm is not None:
            return
        llmapi = import_llmapi()
        self._check_weights()
        arguments = llm_arguments(self._parameters)
        policy = getattr(llmapi.CapacitySchedulerPolicy, arguments.capacity_scheduler_policy)
        kwargs = {
            **arguments.options,
            "kv_cache_config": llmapi.KvCacheConfig(**arguments.kv_cache),
            "scheduler_config": llmapi.SchedulerConfig(capacity_scheduler_policy=policy),
        }
        logger.info("loading TensorRT-LLM model %s", self._parameters.model)
        self._llm = cast(_Llm, await asyncio.to_thread(llmapi.LLM, **kwargs))
        self._llmapi = llmapi
        self._stopping.clear()
        self._stats_task = asyncio.create_task(self._poll_stats(), name="trtllm-stats")

    async def stop(self) -> None:
        self._stopping.set()
        task, self._stats_task = self._stats_task, None
        if task is not None:
            # The cancel ends a wait in the stats iterator at once; the event ends the loop
            # should the iterator lose the cancel (see _poll_stats).
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for request_id in list(self._outputs):
            self.abort(request_id)
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)

    def render_prompt(self, prompt: PromptInput) -> RenderedPrompt:
        tokenizer = self._require_llm().tokenizer
        if prompt.messages is None:
            text = prompt.text or ""
            ids = tuple(tokenizer.encode(text))
            return RenderedPrompt(text=text, token_count=len(ids), token_ids=ids)
        conversation = [{"role": m.role, "content": m.content} for m in prompt.messages]
        ids = token_ids_of(
            tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
        )
        rendered = tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )
        return RenderedPrompt(text=str(rendered), token_count=len(ids), token_ids=ids)

    def load(self) -> LoadSnapshot:
        return load_snapshot(
            self._stats,
            in_flight=len(self._outputs),
            tokens_generated_total=self._tokens_generated,
            tally=self._tally,
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        output = self._submit(request)
        try:
            async for step in output:
                completion = step.outputs[0]
                self._tokens_generated += len(completion.token_ids_diff)
                if completion.finish_reason is not None:
                    reason = openai_finish_reason(completion.finish_reason)
                    usage = TokenUsage(request.prompt_tokens, len(completion.token_ids))
                    yield Delta(completion.text_diff, reason, usage)
                    return
                if completion.text_diff:
                    yield Delta(completion.text_diff)
            raise EngineFaultError("the engine ended the sequence without a finish reason")
        finally:
            self.abort(request.request_id)

    def abort(self, request_id: str) -> None:
        output = self._outputs.pop(request_id, None)
        if output is not None and not output.finished:
            output.abort()
            logger.debug("aborted sequence %s", request_id)

    def _submit(self, request: GenerationRequest) -> _RequestOutput:
        llm = self._require_llm()
        if request.request_id in self._outputs:
            raise InvalidRequestError(f"duplicate request id {request.request_id!r}")
        params = self._llmapi.SamplingParams(
            **sampling_arguments(request, self._parameters.default_max_tokens)
        )
        inputs = list(request.prompt_token_ids or ()) or request.prompt
        try:
            output = llm.generate_async(inputs, params, streaming=True)
        except ValueError as error:  # e.g. the prompt exceeds max_seq_len / max_num_tokens
            raise InvalidRequestError(str(error)) from error
        self._outputs[request.request_id] = output
        return output

    def _require_llm(self) -> _Llm:
        if self._llm is None:
            raise EngineUnavailableError("engine is not running")
        return self._llm

    def _check_weights(self) -> None:
        model_dir = Path(self._parameters.model)
        if self._parameters.weights != "fp8-prequantized" or not model_dir.is_dir():
            return
        if not checkpoint_declares_fp8(model_dir):
            raise TrtllmStartError(
                f"weights: 'fp8-prequantized', but {model_dir} declares no fp8 quantization "
                "(hf_quant_config.json quant_algo FP8, or config.json quantization_config "
                "quant_method fp8); quantize it first, e.g. with NVIDIA ModelOpt"
            )

    async def _poll_stats(self) -> None:
        """Drain the iteration stats until `stop`. The loop ends on the stop event, not
        only on cancellation: the stats iterator waits with `asyncio.wait_for`, which in
        Python 3.11 returns the item and drops a cancel that arrives as its get completes
        (bpo-42130), and the worker's stop would then wait on this task forever."""
        llm = self._require_llm()
        interval = self._parameters.stats_interval_s
        while not self._stopping.is_set():
            try:
                # The iterator ends when no stats arrive within the timeout (IterationResult).
                async for stats in llm.get_stats_async(timeout=interval):
                    self._stats = stats
                    self._tally = fold_iteration(self._tally, stats)
                    if self._stopping.is_set():
                        return
            except Exception:
                logger.exception("reading TensorRT-LLM iteration stats failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stopping.wait()


def build_trtllm_backend(settings: EngineSettings) -> TrtllmBackend:
    return TrtllmBackend(TrtllmParameters.model_validate(settings.parameters))
