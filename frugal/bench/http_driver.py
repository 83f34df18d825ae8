"""Drives the OpenAI chat completions API of any base URL (I/O layer: httpx).

Streamed requests ask for `include_usage`, time every content chunk, and read the engine's
time from the SSE comment the gateway writes before the end. Errors: a non-200 status, an
error event, a stream without `data: [DONE]`, or a transport error; a timeout is counted
apart too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from frugal.bench.driver import (
    ENGINE_MS_COMMENT,
    ENGINE_MS_HEADER,
    BenchRequest,
    parse_engine_ms,
    time_between_tokens,
)
from frugal.bench.stats import RequestSample

DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Target:
    base_url: str
    headers: dict[str, str]
    model: str


def _has_content(event: Mapping[str, Any]) -> bool:
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    delta = choices[0].get("delta")
    return isinstance(delta, dict) and bool(delta.get("content"))


def _completion_tokens(event: Mapping[str, Any]) -> int | None:
    usage = event.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        return int(usage["completion_tokens"])
    return None


class HttpDriver:
    """A keep-alive pool of `connections` HTTP/1.1 connections to one target."""

    def __init__(
        self,
        target: Target,
        connections: int,
        *,
        stream: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._target = target
        self._stream = stream
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._client = httpx.AsyncClient(
            base_url=target.base_url,
            headers=target.headers,
            limits=limits,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
        )

    async def __aenter__(self) -> HttpDriver:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    def _body(self, request: BenchRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._target.model,
            "messages": [{"role": "user", "content": request.prompt}],
            "max_tokens": request.max_tokens,
            "seed": request.seed,
            "stream": self._stream,
        }
        if self._stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def send(self, request: BenchRequest, started: float | None = None) -> RequestSample:
        start = time.perf_counter() if started is None else started
        try:
            if self._stream:
                return await self._streamed(request, start)
            return await self._unary(request, start)
        except httpx.TimeoutException:
            return RequestSample(ok=False, timed_out=True)
        except (httpx.HTTPError, json.JSONDecodeError):
            return RequestSample(ok=False)

    async def _unary(self, request: BenchRequest, start: float) -> RequestSample:
        response = await self._client.post("/v1/chat/completions", json=self._body(request))
        end = time.perf_counter()
        if response.status_code != 200:
            return RequestSample(ok=False)
        tokens = _completion_tokens(response.json()) or 0
        return RequestSample(
            ok=True,
            tokens=tokens,
            e2e_ms=(end - start) * 1000,
            engine_ms=parse_engine_ms(response.headers.get(ENGINE_MS_HEADER)),
        )

    async def _streamed(self, request: BenchRequest, start: float) -> RequestSample:
        arrivals: list[float] = []
        usage_tokens: int | None = None
        engine_ms: float | None = None
        done = False
        body = self._body(request)
        async with self._client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return RequestSample(ok=False)
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    if "error" in event:
                        return RequestSample(ok=False)
                    if _has_content(event):
                        arrivals.append(time.perf_counter())
                    usage_tokens = _completion_tokens(event) or usage_tokens
                elif line == "data: [DONE]":
                    done = True
                elif line.startswith(ENGINE_MS_COMMENT):
                    engine_ms = parse_engine_ms(line.removeprefix(ENGINE_MS_COMMENT))
        end = time.perf_counter()
        if not done or not arrivals:
            return RequestSample(ok=False)
        tokens = usage_tokens or len(arrivals)
        return RequestSample(
            ok=True,
            ttft_ms=(arrivals[0] - start) * 1000,
            tbt_ms=time_between_tokens(arrivals, tokens),
            tokens=tokens,
            e2e_ms=(end - start) * 1000,
            engine_ms=engine_ms,
        )
