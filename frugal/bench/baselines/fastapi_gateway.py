"""The paper's baseline: a typical Python LLM gateway (FastAPI + uvicorn + grpc.aio).

Shipped with `frugal bench compare`, never on Frugal's request path; edge layer throughout
(HTTP in, gRPC out). The ScaleLLM paper measures its gateway against "a typical Python
gateway", and `frugal bench compare` runs this one in front of the same sim engine workers
as Frugal, so the difference it shows is the gateway alone. It is written the way a team
writes one in a day: a pydantic request model, the request turned into protobuf with
`json_format`, round-robin over one grpc.aio channel per replica, every chunk turned back
into a dict and then JSON; no auth, no safety checks. uvicorn picks uvloop and httptools
(installed with the dev extras, as `uvicorn[standard]`), one worker process. Engine time
goes back as the Frugal gateway sends it (the `x-frugal-engine-ms` header on unary answers,
an SSE comment before `[DONE]` on streams), so the benchmark client can split end-to-end
latency into gateway and engine time for both.

Run: `python -m frugal.bench.baselines.fastapi_gateway --port P --model NAME
--replicas 127.0.0.1:5001,127.0.0.1:5002 [--host 127.0.0.1]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel, Field

from frugal import wire
from frugal.v1 import inference_pb2 as pb
from frugal.v1 import inference_pb2_grpc as pb_grpc


class ChatMessage(BaseModel):
    role: str
    content: str


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None


# Not frozen: Starlette assigns __traceback__ on the way out.
@dataclass
class ApiError(Exception):
    status: int
    type: str
    code: str
    message: str

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


# gRPC status of an engine error -> HTTP status, OpenAI error type and code (as the Frugal
# gateway answers them, so error rates compare like for like).
_ENGINE_ERRORS: dict[Any, tuple[int, str, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error", "invalid_request"),
    grpc.StatusCode.NOT_FOUND: (404, "invalid_request_error", "model_not_found"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error", "rate_limit_exceeded"),
    grpc.StatusCode.UNAVAILABLE: (503, "server_error", "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout_error", "upstream_timeout"),
}


def engine_error(error: Any) -> ApiError:
    """An `AioRpcError` from an engine as the error the client sees."""
    status, kind, code = _ENGINE_ERRORS.get(error.code(), (500, "server_error", "engine_error"))
    return ApiError(status, kind, code, error.details() or error.code().name)


def model_not_found(model: str) -> ApiError:
    message = f"The model `{model}` does not exist or you do not have access to it."
    return ApiError(404, "invalid_request_error", "model_not_found", message)


def to_json(message: Message) -> dict[str, Any]:
    """OpenAI's JSON for a response message; zero values printed, as Envoy's transcoder does."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class EnginePool:
    """One grpc.aio channel per replica, taken in turn. Channels belong to the event loop that
    opens them, so they are opened in the app's lifespan, not when the app is built."""

    def __init__(self, replicas: Sequence[str]) -> None:
        self._replicas = list(replicas)
        self._channels: list[Any] = []
        self._stubs: itertools.cycle[Any] = itertools.cycle([])

    def open(self) -> None:
        self._channels = [grpc.aio.insecure_channel(address) for address in self._replicas]
        self._stubs = itertools.cycle([pb_grpc.InferenceStub(c) for c in self._channels])

    def next_stub(self) -> Any:
        return next(self._stubs)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


async def unary_chat(stub: Any, request: pb.ChatCompletionRequest) -> JSONResponse:
    call = stub.CreateChatCompletion(request)
    try:
        completion = await call
    except grpc.aio.AioRpcError as error:
        raise engine_error(error) from error
    engine_ms = (await call.trailing_metadata()).get(wire.ENGINE_MS)
    return JSONResponse(
        to_json(completion), headers={wire.ENGINE_MS: engine_ms} if engine_ms else {}
    )


async def sse_events(call: Any, first: Any) -> AsyncIterator[str]:
    """The chunks as SSE events, then the engine time and `[DONE]`; an error event instead
    when the engine fails mid-stream, so a broken answer never looks complete."""
    try:
        chunk = first
        while chunk is not grpc.aio.EOF:
            yield f"data: {json.dumps(to_json(chunk))}\n\n"
            chunk = await call.read()
        engine_ms = (await call.trailing_metadata()).get(wire.ENGINE_MS)
    except grpc.aio.AioRpcError as error:
        yield f"data: {json.dumps(engine_error(error).body())}\n\n"
        return
    finally:
        # A no-op after a clean end; when the client leaves mid-stream it frees the engine slot.
        call.cancel()
    if engine_ms:
        yield f"{wire.ENGINE_MS_COMMENT}{engine_ms}\n\n"
    yield "data: [DONE]\n\n"


async def stream_chat(stub: Any, request: pb.ChatCompletionRequest) -> StreamingResponse:
    """Waits for the first chunk so that an engine refusal still gets its HTTP status."""
    call = stub.StreamChatCompletion(request)
    try:
        first = await call.read()
    except grpc.aio.AioRpcError as error:
        raise engine_error(error) from error
    return StreamingResponse(sse_events(call, first), media_type="text/event-stream")


def _describe(error: RequestValidationError) -> str:
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return f"The body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}."
    where = ".".join(str(part) for part in first["loc"] if part != "body")
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def build_app(model: str, replicas: Sequence[str]) -> FastAPI:
    pool = EnginePool(replicas)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool.open()
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return error.response()

    # Malformed JSON reaches here too, as a `json_invalid` validation error.
    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, error: RequestValidationError) -> JSONResponse:
        return ApiError(
            400, "invalid_request_error", "invalid_request", _describe(error)
        ).response()

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        entry = {"id": model, "object": "model", "created": 0, "owned_by": "frugal"}
        return {"object": "list", "data": [entry]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest) -> Response:
        if body.model != model:
            raise model_not_found(body.model)
        try:
            request = json_format.ParseDict(
                body.model_dump(exclude_none=True), pb.ChatCompletionRequest()
            )
        except json_format.ParseError as error:  # e.g. a number out of its proto type's range
            raise ApiError(400, "invalid_request_error", "invalid_request", str(error)) from error
        stub = pool.next_stub()
        if body.stream:
            return await stream_chat(stub, request)
        return await unary_chat(stub, request)

    return app


def _replica_list(text: str) -> list[str]:
    replicas = [address.strip() for address in text.split(",") if address.strip()]
    if not replicas:
        raise argparse.ArgumentTypeError("at least one HOST:PORT")
    return replicas


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--replicas", type=_replica_list, required=True, help="HOST:PORT,...")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    app = build_app(args.model, args.replicas)
    uvicorn.run(
        app, host=args.host, port=args.port, workers=1, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
