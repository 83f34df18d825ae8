"""Drives engine workers over gRPC with no gateway in between (I/O layer: grpc.aio).

The benchmark's `direct` system: what a client would see talking to the engines itself,
round-robin over the replicas. The engine's time comes back as trailing metadata.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import grpc

from frugal import wire
from frugal.bench.driver import BenchRequest, parse_engine_ms, streamed_sample
from frugal.bench.http_driver import DEFAULT_TIMEOUT_S
from frugal.bench.stats import RequestSample
from frugal.v1 import inference_pb2 as pb
from frugal.v1 import inference_pb2_grpc as pb_grpc


def _engine_ms(metadata: Any) -> float | None:
    for key, value in metadata or ():
        if key == wire.ENGINE_MS:
            return parse_engine_ms(str(value))
    return None


class GrpcDriver:
    """One channel per replica (HTTP/2 multiplexes every stream on it)."""

    def __init__(
        self,
        replicas: Sequence[str],
        model: str,
        *,
        stream: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not replicas:
            raise ValueError("the direct driver needs at least one engine address")
        self._channels = [grpc.aio.insecure_channel(address) for address in replicas]
        self._stubs = itertools.cycle([pb_grpc.InferenceStub(c) for c in self._channels])
        self._model = model
        self._stream = stream
        self._timeout_s = timeout_s

    async def __aenter__(self) -> GrpcDriver:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for channel in self._channels:
            await channel.close()

    def _request(self, request: BenchRequest) -> Any:
        message = pb.ChatCompletionRequest(
            model=self._model,
            max_tokens=request.max_tokens,
            seed=request.seed,
            temperature=request.temperature,
        )
        message.messages.add(role="user").content.string_value = request.prompt
        if self._stream:
            message.stream = True
            message.stream_options.include_usage = True
        return message

    async def send(self, request: BenchRequest, started: float | None = None) -> RequestSample:
        start = time.perf_counter() if started is None else started
        stub = next(self._stubs)
        try:
            if self._stream:
                return await self._streamed(stub, request, start)
            return await self._unary(stub, request, start)
        except grpc.aio.AioRpcError as error:
            timed_out = error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            return RequestSample(ok=False, timed_out=timed_out, error=f"grpc {error.code().name}")

    async def _unary(self, stub: Any, request: BenchRequest, start: float) -> RequestSample:
        call = stub.CreateChatCompletion(self._request(request), timeout=self._timeout_s)
        response = await call
        end = time.perf_counter()
        return RequestSample(
            ok=True,
            tokens=response.usage.completion_tokens,
            e2e_ms=(end - start) * 1000,
            engine_ms=_engine_ms(await call.trailing_metadata()),
        )

    async def _streamed(self, stub: Any, request: BenchRequest, start: float) -> RequestSample:
        call = stub.StreamChatCompletion(self._request(request), timeout=self._timeout_s)
        arrivals: list[float] = []
        tokens = 0
        async for chunk in call:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.perf_counter())
            if chunk.HasField("usage"):
                tokens = chunk.usage.completion_tokens
        end = time.perf_counter()
        engine_ms = _engine_ms(await call.trailing_metadata())
        return streamed_sample(start, end, arrivals, tokens, engine_ms)
