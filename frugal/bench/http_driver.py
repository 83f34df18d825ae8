"""Drives the OpenAI chat completions API of any base URL (I/O layer: aiohttp).

aiohttp's C HTTP parser, as in vLLM's serving benchmark: with httpx the load generator
itself used more CPU than the gateway it measured (40 % of a core at 256 streams).

Streamed requests ask for `include_usage`, time every content chunk, and read the engine's
time from the SSE comment the gateway writes before the end. Errors: a non-200 status, an
error event (each with the OpenAI error's code, so a 503 `service_unavailable` is told from
a 429), a stream without `data: [DONE]`, or a transport error; a timeout is counted apart
too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from frugal import wire
from frugal.bench.driver import BenchRequest, parse_engine_ms, streamed_sample
from frugal.bench.stats import RequestSample

DEFAULT_TIMEOUT_S = 600.0
CHAT_PATH = "v1/chat/completions"  # relative: the base URL may carry a path prefix


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


def error_code(error: object) -> str:
    """The code of an OpenAI error object (its type when it has no code); "" when there
    is none."""
    if not isinstance(error, dict):
        return ""
    for field in ("code", "type"):
        if isinstance(error.get(field), str) and error[field]:
            return str(error[field])
    return ""


def _status_error(status: int, payload: bytes) -> str:
    try:
        body = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    code = error_code(body.get("error")) if isinstance(body, dict) else ""
    return f"http {status} {code}".rstrip()


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
        self._connections = connections
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=10.0)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpDriver:
        self._session = aiohttp.ClientSession(
            base_url=self._target.base_url + "/",
            headers=self._target.headers,
            connector=aiohttp.TCPConnector(limit=self._connections),
            timeout=self._timeout,
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    def _body(self, request: BenchRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._target.model,
            "messages": [{"role": "user", "content": request.prompt}],
            "max_tokens": request.max_tokens,
            **request.sampling(),
            "stream": self._stream,
        }
        if self._stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def send(self, request: BenchRequest, started: float | None = None) -> RequestSample:
        assert self._session is not None, "use the driver as an async context manager"
        start = time.perf_counter() if started is None else started
        try:
            if self._stream:
                return await self._streamed(self._session, request, start)
            return await self._unary(self._session, request, start)
        except TimeoutError:
            return RequestSample(ok=False, timed_out=True, error="timeout")
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as error:
            return RequestSample(ok=False, error=f"transport: {type(error).__name__}")
        except json.JSONDecodeError:
            return RequestSample(ok=False, error="bad JSON")

    async def _unary(
        self, session: aiohttp.ClientSession, request: BenchRequest, start: float
    ) -> RequestSample:
        async with session.post(CHAT_PATH, json=self._body(request)) as response:
            payload = await response.read()
            end = time.perf_counter()
            if response.status != 200:
                return RequestSample(ok=False, error=_status_error(response.status, payload))
            return RequestSample(
                ok=True,
                tokens=_completion_tokens(json.loads(payload)) or 0,
                e2e_ms=(end - start) * 1000,
                engine_ms=parse_engine_ms(response.headers.get(wire.ENGINE_MS)),
            )

    async def _streamed(
        self, session: aiohttp.ClientSession, request: BenchRequest, start: float
    ) -> RequestSample:
        arrivals: list[float] = []
        usage_tokens: int | None = None
        engine_ms: float | None = None
        done = False
        async with session.post(CHAT_PATH, json=self._body(request)) as response:
            if response.status != 200:
                payload = await response.read()
                return RequestSample(ok=False, error=_status_error(response.status, payload))
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    if "error" in event:
                        code = error_code(event["error"])
                        return RequestSample(ok=False, error=f"error event {code}".rstrip())
                    if _has_content(event):
                        arrivals.append(time.perf_counter())
                    usage_tokens = _completion_tokens(event) or usage_tokens
                elif line == "data: [DONE]":
                    done = True
                elif line.startswith(wire.ENGINE_MS_COMMENT):
                    engine_ms = parse_engine_ms(line.removeprefix(wire.ENGINE_MS_COMMENT))
        if not done:
            return RequestSample(ok=False, error="no [DONE]")
        return streamed_sample(start, time.perf_counter(), arrivals, usage_tokens, engine_ms)
