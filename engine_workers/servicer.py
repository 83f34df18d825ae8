"""The `frugal.v1.Inference` servicer (edge layer): proto <-> core conversion only.

Every handler converts the request to plain values, calls `EngineCore`, and converts the
deltas back to OpenAI-shaped messages. Chat and text completions differ only in what an
`_Endpoint` holds (request and answer conversion, chunk formats); each RPC is one of three
shared ways of answering: unary, typed chunk stream, or SSE events. Domain errors become
gRPC status in `_fail`, the one place that calls `context.abort`. Engine time goes back as
trailing metadata, and a unary answer's also as initial metadata, which the transcoder
turns into HTTP response headers (HTTP/1.1 clients never see trailers). The gateway's
`x-request-id` tags the handler's logs and keys the request's usage record, which the
`EngineUsage` service answers from once the trailers can no longer reach the gateway.
"""

from __future__ import annotations

import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

from google.api import httpbody_pb2  # type: ignore[import-untyped]
from google.protobuf import json_format

from engine_workers.answer_events import AnswerEvents
from engine_workers.core import EngineCore, RequestTiming
from engine_workers.engine import Delta, GenerationRequest, TokenUsage
from engine_workers.errors import EngineError, InvalidRequestError
from engine_workers.first_token_wait import Due, WaitPlan, until_first_event
from engine_workers.output_guard import OutputGuard
from engine_workers.prompt import ChatTurn, SamplingParams
from engine_workers.sse_events import (
    DONE_EVENT,
    KEEPALIVE_COMMENT,
    ChatChunks,
    ChunkFormat,
    CompletionChunks,
    engine_time_comment,
)
from frugal import wire
from frugal.openai_errors import (
    CONTENT_POLICY_VIOLATION,
    error_event,
    output_blocked_message,
    upstream_kind,
)
from frugal.request_log import bind_request_id
from frugal.v1 import inference_pb2 as pb
from frugal.v1 import inference_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)


EVENT_STREAM = "text/event-stream"

CHAT_COMPLETION = "chat.completion"
CHAT_COMPLETION_CHUNK = "chat.completion.chunk"
TEXT_COMPLETION = "text_completion"


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _json_value(message: Any, name: str) -> object:
    """A google.protobuf.Value field as a Python value; None when absent."""
    if not message.HasField(name):
        return None
    return json_format.MessageToDict(getattr(message, name))


def _sampling(request: Any, *, chat: bool) -> SamplingParams:
    return SamplingParams(
        model=request.model,
        n=_optional(request, "n"),
        max_tokens=_optional(request, "max_tokens"),
        max_completion_tokens=_optional(request, "max_completion_tokens") if chat else None,
        stop=_json_value(request, "stop"),
        seed=_optional(request, "seed"),
        temperature=_optional(request, "temperature"),
        top_p=_optional(request, "top_p"),
    )


def _turns(request: Any) -> list[ChatTurn]:
    return [ChatTurn(role=m.role, content=_json_value(m, "content")) for m in request.messages]


def _usage(usage: TokenUsage) -> Any:
    return pb.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def _engine_times(timing: RequestTiming) -> tuple[tuple[str, str], ...]:
    pairs = ((wire.ENGINE_MS, timing.engine_ms()), (wire.ENGINE_TTFT_MS, timing.ttft_ms()))
    return tuple((key, f"{ms:.3f}") for key, ms in pairs if ms is not None)


def _trailers(timing: RequestTiming) -> tuple[tuple[str, str], ...]:
    """Engine time, and the tokens used even when the request failed or was cut short
    (the gateway settles token budgets from these)."""
    return (
        *_engine_times(timing),
        (wire.PROMPT_TOKENS, str(timing.prompt_tokens)),
        (wire.COMPLETION_TOKENS, str(timing.completion_tokens)),
    )


def _as_engine_error(exc: Exception) -> EngineError:
    if isinstance(exc, EngineError):
        return exc
    logger.exception("request failed", exc_info=exc)
    return EngineError("internal engine error")


async def _fail(
    context: Any, exc: Exception, timing: RequestTiming, extra: tuple[tuple[str, str], ...] = ()
) -> NoReturn:
    """Translate an exception into the RPC's status: the one place errors leave as gRPC."""
    error = _as_engine_error(exc)
    await context.abort(error.code, error.message, trailing_metadata=_trailers(timing) + extra)
    raise AssertionError("context.abort returned")  # pragma: no cover


def _failure_event(error: EngineError) -> bytes:
    return error_event(error.message, *upstream_kind(error.http_status))


def _output_guard(request: Any) -> OutputGuard | None:
    if not request.HasField("output_checks"):
        return None
    checks = request.output_checks
    try:
        return OutputGuard.for_checks(checks.detectors, checks.action, checks.blocklist)
    except ValueError as exc:
        raise InvalidRequestError(f"invalid output_checks: {exc}") from exc


def _output_trailers(
    answer: AnswerEvents, guard: OutputGuard | None
) -> tuple[tuple[str, str], ...]:
    pairs = []
    if guard is not None and guard.redacted:
        pairs.append((wire.OUTPUT_REDACTED, ",".join(guard.redacted)))
    if answer.blocked is not None:
        pairs.append((wire.OUTPUT_BLOCKED, answer.blocked))
    return tuple(pairs)


def _body(data: bytes) -> Any:
    return httpbody_pb2.HttpBody(content_type=EVENT_STREAM, data=data)


def _bind_request_id(context: Any) -> str | None:
    """The gateway's request id, now on the handler's log lines; None without one."""
    for key, value in context.invocation_metadata() or ():
        if key == wire.REQUEST_ID_HEADER:
            bind_request_id(str(value))
            return str(value)
    return None


def _time_comment(timing: RequestTiming) -> bytes:
    engine_ms = timing.engine_ms()
    return b"" if engine_ms is None else engine_time_comment(engine_ms)


async def _answer_metadata(
    context: Any, timing: RequestTiming, findings: tuple[tuple[str, str], ...]
) -> None:
    """Before a unary answer: engine time, usage and the output checks' findings as
    initial metadata (the headers the gateway reads; the answer is whole by then), and
    again as trailers."""
    await context.send_initial_metadata(_trailers(timing) + findings)
    context.set_trailing_metadata(_trailers(timing) + findings)


# OpenAI's finish_reason for an answer its content filter withheld.
CONTENT_FILTER = "content_filter"


class _Outcome:
    """The collected output of a unary request."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.finish_reason = "stop"
        self.usage = TokenUsage(0, 0)

    def add(self, delta: Delta) -> None:
        self.text.append(delta.text)
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason
        if delta.usage is not None:
            self.usage = delta.usage

    def check(self, guard: OutputGuard | None) -> tuple[tuple[str, str], ...]:
        """Run the request's output checks on the whole text: `redact` rewrites it;
        `block` withholds all of it with finish_reason "content_filter", as OpenAI does
        when its own filters stop an answer. What they found, as (header, value) pairs."""
        if guard is None:
            return ()
        released = guard.check_whole("".join(self.text))
        if released is None:
            self.text, self.finish_reason = [], CONTENT_FILTER
            return ((wire.OUTPUT_BLOCKED, guard.blocked or ""),)
        self.text = [released]
        return ((wire.OUTPUT_REDACTED, ",".join(guard.redacted)),) if guard.redacted else ()


class _ChunkMessages(ABC):
    """The typed messages of one StreamChatCompletion / StreamCompletion answer."""

    message: ClassVar[Any]
    kind: ClassVar[str]

    def __init__(self, request_id: str, created: int, model: str) -> None:
        self._head = {"id": request_id, "object": self.kind, "created": created, "model": model}

    def chunk(self, **fields: Any) -> Any:
        return self.message(**self._head, **fields)

    def opening(self) -> list[Any]:
        return []

    @abstractmethod
    def text(self, text: str) -> Any: ...

    @abstractmethod
    def final(self, finish_reason: str) -> Any: ...

    def usage(self, usage: TokenUsage) -> Any:
        return self.chunk(choices=[], usage=_usage(usage))


class _ChatChunkMessages(_ChunkMessages):
    message = pb.ChatCompletionChunk
    kind = CHAT_COMPLETION_CHUNK

    def _choice(self, delta: Any, finish_reason: str | None = None) -> Any:
        choice = pb.ChatChunkChoice(index=0, delta=delta, finish_reason=finish_reason)
        return self.chunk(choices=[choice])

    def opening(self) -> list[Any]:
        return [self._choice(pb.ChatDelta(role="assistant", content=""))]

    def text(self, text: str) -> Any:
        return self._choice(pb.ChatDelta(content=text))

    def final(self, finish_reason: str) -> Any:
        return self._choice(pb.ChatDelta(), finish_reason)


class _CompletionChunkMessages(_ChunkMessages):
    message = pb.Completion
    kind = TEXT_COMPLETION

    def text(self, text: str) -> Any:
        return self.chunk(choices=[pb.CompletionChoice(index=0, text=text)])

    def final(self, finish_reason: str) -> Any:
        return self.chunk(
            choices=[pb.CompletionChoice(index=0, text="", finish_reason=finish_reason)]
        )


async def _chunk_messages(
    chunks: _ChunkMessages, deltas: AsyncIterator[Delta], *, include_usage: bool
) -> AsyncIterator[Any]:
    """A streamed answer's chunk messages: the opening, the text, the end and the usage."""
    for opening in chunks.opening():
        yield opening
    last = Delta("")
    async for delta in deltas:
        if delta.text:
            yield chunks.text(delta.text)
        last = delta
    yield chunks.final(last.finish_reason or "stop")
    if include_usage and last.usage is not None:
        yield chunks.usage(last.usage)


def _chat_generation(core: EngineCore, request_id: str, request: Any) -> GenerationRequest:
    return core.chat_request(request_id, _turns(request), _sampling(request, chat=True))


def _completion_generation(core: EngineCore, request_id: str, request: Any) -> GenerationRequest:
    prompt = _json_value(request, "prompt")
    return core.completion_request(request_id, prompt, _sampling(request, chat=False))


def _chat_answer(request_id: str, request: Any, outcome: _Outcome) -> Any:
    message = pb.AssistantMessage(role="assistant", content="".join(outcome.text))
    return pb.ChatCompletion(
        id=request_id,
        object=CHAT_COMPLETION,
        created=int(time.time()),
        model=request.model,
        choices=[pb.ChatChoice(index=0, message=message, finish_reason=outcome.finish_reason)],
        usage=_usage(outcome.usage),
    )


def _completion_answer(request_id: str, request: Any, outcome: _Outcome) -> Any:
    text = "".join(outcome.text)
    return pb.Completion(
        id=request_id,
        object=TEXT_COMPLETION,
        created=int(time.time()),
        model=request.model,
        choices=[pb.CompletionChoice(index=0, text=text, finish_reason=outcome.finish_reason)],
        usage=_usage(outcome.usage),
    )


@dataclass(frozen=True)
class _Endpoint:
    """What differs between the chat and the text completion RPCs; the servicer's three
    ways of answering (unary, typed stream, SSE events) are shared by both."""

    id_prefix: str
    generation: Callable[[EngineCore, str, Any], GenerationRequest]
    answer: Callable[[str, Any, _Outcome], Any]
    chunk_messages: Callable[[str, int, str], _ChunkMessages]
    sse_chunks: Callable[[str, int, str], ChunkFormat]

    def new_id(self) -> str:
        return f"{self.id_prefix}-{uuid.uuid4().hex}"


CHAT = _Endpoint("chatcmpl", _chat_generation, _chat_answer, _ChatChunkMessages, ChatChunks)
COMPLETION = _Endpoint(
    "cmpl", _completion_generation, _completion_answer, _CompletionChunkMessages, CompletionChunks
)


# What a stream sends while it waits for its first token, when the worker is built
# without a plan (tests): the defaults of frugal.yaml's `streams` section.
DEFAULT_WAIT = WaitPlan(headers_after_s=0.5, keepalive_interval_s=10.0)


class InferenceServicer(pb_grpc.InferenceServicer):  # type: ignore[misc]
    def __init__(self, core: EngineCore, wait: WaitPlan = DEFAULT_WAIT) -> None:
        self._core = core
        self._wait = wait

    async def CreateChatCompletion(self, request: Any, context: Any) -> Any:
        return await self._unary(CHAT, request, context)

    async def StreamChatCompletion(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for chunk in self._stream(CHAT, request, context):
            yield chunk

    async def StreamChatCompletionEvents(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for body in self._events(CHAT, request, context):
            yield body

    async def CreateCompletion(self, request: Any, context: Any) -> Any:
        return await self._unary(COMPLETION, request, context)

    async def StreamCompletion(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for chunk in self._stream(COMPLETION, request, context):
            yield chunk

    async def StreamCompletionEvents(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for body in self._events(COMPLETION, request, context):
            yield body

    def _start(self, endpoint: _Endpoint, context: Any) -> tuple[str, RequestTiming]:
        """A request's id and timing, recorded under the gateway's id. If the client goes
        away while a stream's handler waits on a write, the generators are not resumed,
        but the RPC's done-callback still frees the engine slot and closes the usage
        record at once."""
        timing = self._core.begin(_bind_request_id(context))
        request_id = endpoint.new_id()
        context.add_done_callback(lambda _: self._core.rpc_done(request_id, timing))
        return request_id, timing

    async def _unary(self, endpoint: _Endpoint, request: Any, context: Any) -> Any:
        """A whole answer, its output checked as a whole; usage and what the checks found
        go out in its headers (and trailers), with the answer."""
        request_id, timing = self._start(endpoint, context)
        try:
            generation = endpoint.generation(self._core, request_id, request)
            guard = _output_guard(request)
            outcome = _Outcome()
            async for delta in self._core.generate(generation, timing):
                outcome.add(delta)
        except Exception as exc:
            await _fail(context, exc, timing)
        findings = outcome.check(guard)
        timing.answered = True
        await _answer_metadata(context, timing, findings)
        return endpoint.answer(request_id, request, outcome)

    async def _stream(self, endpoint: _Endpoint, request: Any, context: Any) -> AsyncIterator[Any]:
        """A streamed answer as typed chunk messages; usage in the trailers."""
        request_id, timing = self._start(endpoint, context)
        chunks = endpoint.chunk_messages(request_id, int(time.time()), request.model)
        try:
            generation = endpoint.generation(self._core, request_id, request)
            include_usage = request.stream_options.include_usage
            deltas = self._core.generate(generation, timing)
            async for message in _chunk_messages(chunks, deltas, include_usage=include_usage):
                timing.answered = True
                yield message
        except Exception as exc:
            await _fail(context, exc, timing)
        context.set_trailing_metadata(_trailers(timing))

    async def _events(self, endpoint: _Endpoint, request: Any, context: Any) -> AsyncIterator[Any]:
        """A streamed answer as SSE bytes: the chunk events, the engine's time, then
        `[DONE]`, or the error event of a failure or of a blocked answer.

        Until the first token, the wait plan sends the response headers (Envoy's sign
        that this replica is alive; its transcoder holds them until the first message),
        then keep-alive comments. A failure before the first byte is a plain gRPC error,
        which the client gets as an HTTP error status; after it (a comment counts), the
        error event goes out before the gRPC status. The trailers leave once the sequence
        has stopped, so they carry every token the engine made for the request."""
        request_id, timing = self._start(endpoint, context)
        chunks = endpoint.sse_chunks(request_id, int(time.time()), request.model)
        try:
            generation = endpoint.generation(self._core, request_id, request)
            guard = _output_guard(request)
        except Exception as exc:
            await _fail(context, exc, timing)
        answer = AnswerEvents(chunks, guard, include_usage=request.stream_options.include_usage)
        events = answer.events(self._core.generate(generation, timing))
        sent_any = False
        try:
            async for event in until_first_event(events, self._wait):
                if event is Due.HEADERS:
                    await context.send_initial_metadata(())
                    continue
                sent_any = timing.answered = True
                yield _body(KEEPALIVE_COMMENT if event is Due.KEEPALIVE else event)
        except Exception as exc:
            self._core.end(request_id, timing)
            if not sent_any:
                await _fail(context, exc, timing)
            error = _as_engine_error(exc)  # logs an unexpected one, once
            yield _body(_time_comment(timing) + _failure_event(error))
            await _fail(context, error, timing, _output_trailers(answer, guard))
        # A blocked answer left its sequence running: stopped, its count is final.
        self._core.end(request_id, timing)
        ending = answer.closing + _time_comment(timing)
        if answer.blocked is None:
            ending += DONE_EVENT
        else:
            ending += error_event(output_blocked_message(answer.blocked), *CONTENT_POLICY_VIOLATION)
        context.set_trailing_metadata(_trailers(timing) + _output_trailers(answer, guard))
        yield _body(ending)
