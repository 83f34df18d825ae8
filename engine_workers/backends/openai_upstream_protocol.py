"""The OpenAI-compatible wire protocol as the `openai` backend speaks it (backend layer, pure:
no I/O, no aiohttp).

- `build_upstream_request`: a `GenerationRequest` as the JSON body of a streamed
  /chat/completions or /completions request, usage included in the stream.
- `StreamAssembler`: the SSE lines of the answer turned into `Delta`s. Servers differ in where
  usage comes: vLLM and SGLang send it in a chunk of its own after the finish chunk, then
  `[DONE]`; `transformers serve` puts it in the finish chunk and sends no `[DONE]`.
- `upstream_error`: an upstream HTTP error as one of our `EngineError`s.
- `parse_load_metrics`, `load_snapshot`: the upstream's Prometheus text as load figures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from engine_workers.engine import Delta, GenerationRequest, LoadSnapshot, TokenUsage
from engine_workers.errors import (
    EngineError,
    EngineFaultError,
    EngineUnavailableError,
    InvalidRequestError,
    ModelNotFoundError,
)

CHAT_PATH = "chat/completions"
COMPLETION_PATH = "completions"
MAX_MESSAGE_CHARS = 300

# Gauge names per figure, in order of preference. vLLM renamed gpu_cache_usage_perc to
# kv_cache_usage_perc (V1 engine); trtllm-serve's names are those of
# tensorrt_llm/metrics/collector.py; frugal_engine_* is another Frugal worker's metrics port.
RUNNING_GAUGES = (
    "vllm:num_requests_running",
    "sglang:num_running_reqs",
    "trtllm_num_requests_running",
    "frugal_engine_num_requests_running",
)
WAITING_GAUGES = (
    "vllm:num_requests_waiting",
    "sglang:num_queue_reqs",
    "trtllm_num_requests_waiting",
    "frugal_engine_num_requests_waiting",
)
KV_USAGE_GAUGES = (
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "sglang:token_usage",
    "trtllm_kv_cache_utilization",
    "frugal_engine_kv_cache_usage_perc",
)


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    path: str  # under the API root, e.g. "chat/completions"
    body: dict[str, Any]


def build_upstream_request(request: GenerationRequest, model: str) -> UpstreamRequest:
    """Chat requests forward their messages, completions their prompt; always streamed."""
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.messages is not None:
        path = CHAT_PATH
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
    else:
        path = COMPLETION_PATH
        body["prompt"] = request.prompt
    sampling = {
        "max_tokens": request.max_tokens,
        "seed": request.seed,
        "temperature": request.temperature,
        "top_p": request.top_p,
    }
    body.update({name: value for name, value in sampling.items() if value is not None})
    if request.stop:
        body["stop"] = list(request.stop)
    return UpstreamRequest(path, body)


def sse_data(line: bytes) -> str | None:
    """The payload of an SSE `data:` line; None for blank, comment and other field lines."""
    if not line.startswith(b"data:"):
        return None
    return line[5:].strip().decode()


class StreamAssembler:
    """Turns one streamed answer's SSE lines into `Delta`s; the last has finish_reason and
    usage. `prompt_tokens` is our estimate, used only if the upstream reports no usage."""

    def __init__(self, prompt_tokens: int) -> None:
        self._prompt_tokens = prompt_tokens
        self._finish_reason: str | None = None
        self._usage: TokenUsage | None = None
        self.text_chunks = 0
        self.finished = False  # the final Delta has been handed out
        self.done = False  # the upstream sent [DONE]

    @property
    def completion_tokens(self) -> int:
        """Completion tokens seen so far: one a text chunk, until usage says how many."""
        reported = self._usage.completion_tokens if self._usage is not None else 0
        return max(self.text_chunks, reported)

    def feed(self, line: bytes) -> Delta | None:
        """The Delta a line carries, if any; raises EngineFaultError for an error event."""
        data = sse_data(line)
        if data is None or self.done:
            return None
        if data == "[DONE]":
            self.done = True
            return None
        payload = _json_object(data)
        if "error" in payload or payload.get("object") == "error":
            raise EngineFaultError(f"the upstream failed mid-stream: {_message(payload)}")
        text, finish_reason, usage = chunk_parts(payload)
        self._finish_reason = finish_reason or self._finish_reason
        self._usage = usage or self._usage
        if self.finished:
            return None
        self.text_chunks += 1 if text else 0
        if self._finish_reason is not None and self._usage is not None:
            self.finished = True
            return Delta(text, self._finish_reason, self._usage)
        return Delta(text) if text else None

    def end(self) -> Delta | None:
        """At the end of the body: the final Delta if still owed, usage estimated if the
        upstream sent none; raises EngineFaultError if the answer never finished."""
        if self.finished:
            return None
        if self._finish_reason is None:
            raise EngineFaultError("the upstream ended the stream before the answer finished")
        self.finished = True
        return Delta("", self._finish_reason, TokenUsage(self._prompt_tokens, self.text_chunks))


def chunk_parts(payload: Mapping[str, Any]) -> tuple[str, str | None, TokenUsage | None]:
    """(text, finish_reason, usage) of one chat or completion chunk."""
    text, finish_reason = "", None
    choices = payload.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        text = content if isinstance(content, str) else ""
        reason = choice.get("finish_reason")
        finish_reason = reason if isinstance(reason, str) and reason else None
    return text, finish_reason, _usage(payload.get("usage"))


def _usage(value: object) -> TokenUsage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return TokenUsage(prompt, completion)
    return None


def _json_object(data: str) -> dict[str, Any]:
    try:
        payload = json.loads(data)
    except ValueError:
        raise EngineFaultError(f"the upstream sent a malformed event: {_clip(data)}") from None
    if not isinstance(payload, dict):
        raise EngineFaultError(f"the upstream sent a malformed event: {_clip(data)}")
    return payload


def error_message(body: str) -> str:
    """The message of an error body: OpenAI's {"error": {"message"}}, {"error": "..."},
    vLLM's older {"message"}, FastAPI's {"detail"}, or the text itself."""
    try:
        payload = json.loads(body)
    except ValueError:
        return _clip(body.strip()) or "no message"
    return _message(payload) if isinstance(payload, dict) else _clip(body)


def _message(payload: Mapping[str, Any]) -> str:
    error = payload.get("error", payload)
    if isinstance(error, str):
        return _clip(error)
    if isinstance(error, dict):
        for key in ("message", "detail"):
            value = error.get(key)
            if isinstance(value, str) and value:
                return _clip(value)
            if isinstance(value, list) and value:  # FastAPI's validation errors
                return _clip("; ".join(str(item.get("msg", item)) for item in value))
    return _clip(json.dumps(payload))


def _error_code(body: str) -> str | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def upstream_error(status: int, body: str, *, model: str, path: str) -> EngineError:
    """Our error for an upstream HTTP error answer (status >= 400) to `path`."""
    message = error_message(body)
    detail = f"({status}: {message})"
    if _model_not_found(status, body, message, model):
        return ModelNotFoundError(f"the upstream does not serve model {model!r} {detail}")
    if status in (404, 405):
        return InvalidRequestError(f"the upstream has no /{path} endpoint {detail}")
    if status in (401, 403):
        return EngineUnavailableError(f"the upstream refused the worker's credentials {detail}")
    if status in (408, 429, 502, 503, 504):
        return EngineUnavailableError(f"the upstream is overloaded or unavailable {detail}")
    if status >= 500:
        return EngineFaultError(f"the upstream failed {detail}")
    return InvalidRequestError(f"the upstream rejected the request {detail}")


def _model_not_found(status: int, body: str, message: str, model: str) -> bool:
    # vLLM: 404 "The model `x` does not exist."; transformers serve: 400 "Server is pinned to
    # 'a'; requested 'x'."; OpenAI: code model_not_found. A 404 about no model is a wrong path.
    if _error_code(body) == "model_not_found":
        return True
    quoted = any(f"{quote}{model}{quote}" in message for quote in "'`\"")
    return (status in (400, 404, 422) and quoted) or (status == 404 and "model" in message.lower())


@dataclass(frozen=True, slots=True)
class UpstreamLoad:
    """What an upstream's metrics say; None where it reports no such gauge."""

    running: int | None
    waiting: int | None
    kv_cache_usage: float | None


def parse_load_metrics(text: str) -> UpstreamLoad | None:
    """Load figures from Prometheus text; None if it has none of the known gauges. Label sets
    (engines, data-parallel ranks) are summed; KV usage is their mean, clamped to 0..1.
    Raises ValueError on text that is not the Prometheus exposition format."""
    values: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if math.isfinite(sample.value):
                values.setdefault(sample.name, []).append(sample.value)
    running = _first(values, RUNNING_GAUGES)
    waiting = _first(values, WAITING_GAUGES)
    kv = _first(values, KV_USAGE_GAUGES)
    if running is None and waiting is None and kv is None:
        return None
    return UpstreamLoad(
        running=None if running is None else round(sum(running)),
        waiting=None if waiting is None else round(sum(waiting)),
        kv_cache_usage=None if kv is None else min(1.0, max(0.0, sum(kv) / len(kv))),
    )


def _first(values: Mapping[str, list[float]], names: tuple[str, ...]) -> list[float] | None:
    return next((values[name] for name in names if name in values), None)


def load_snapshot(
    upstream: UpstreamLoad | None, *, in_flight: int, tokens_generated_total: int
) -> LoadSnapshot:
    """The upstream's figures where it has them, else the requests in flight as we count them."""
    if upstream is None:
        upstream = UpstreamLoad(None, None, None)
    return LoadSnapshot(
        running=in_flight if upstream.running is None else upstream.running,
        waiting=upstream.waiting or 0,
        kv_cache_usage=upstream.kv_cache_usage or 0.0,
        tokens_generated_total=tokens_generated_total,
    )
