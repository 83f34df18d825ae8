"""Streamed chat completions in closed loops against a running stack, and waiting for a
condition (test support, I/O): what the fault and failover tests hold a stack under."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tests.helpers.stack import FrugalStack


async def stream_ok(client: httpx.AsyncClient, model: str) -> bool:
    """One streamed chat completion; True when it ended with `[DONE]`."""
    return (await stream_outcome(client, model)).done


@dataclass(frozen=True)
class StreamOutcome:
    """How one streamed request ended, with when it started and ended (monotonic s)."""

    started: float
    ended: float
    status: int  # 0: no answer at all (connection refused or reset)
    done: bool  # a 200 that ended with `data: [DONE]`
    error: dict[str, Any] | None  # the OpenAI error object of a refusal, if it had one

    @property
    def openai_error(self) -> bool:
        """A refusal whose body is `{"error": {"message", "type", "code"}}`, message said."""
        return (
            self.error is not None
            and bool(self.error.get("message"))
            and bool(self.error.get("type"))
            and bool(self.error.get("code"))
        )


def _error_of(text: str) -> dict[str, Any] | None:
    with contextlib.suppress(ValueError):
        error = json.loads(text).get("error")
        return error if isinstance(error, dict) else None
    return None


async def stream_outcome(client: httpx.AsyncClient, model: str) -> StreamOutcome:
    """One streamed chat completion and how it ended."""
    body = {"model": model, "messages": [{"role": "user", "content": "go"}], "stream": True}
    started = time.monotonic()
    try:
        response = await client.post("/v1/chat/completions", json=body)
    except httpx.HTTPError:
        return StreamOutcome(started, time.monotonic(), 0, False, None)
    done = response.status_code == 200 and response.text.rstrip().endswith("data: [DONE]")
    error = None if response.status_code == 200 else _error_of(response.text)
    return StreamOutcome(started, time.monotonic(), response.status_code, done, error)


class SteadyLoad:
    """`clients` closed loops of streams (with the stack's demo key, or `key`), started on
    entry and stopped on exit; `outcomes` fills as they end, so a test can watch it while a
    fault is on."""

    def __init__(
        self, stack: FrugalStack, model: str, clients: int, key: str | None = None
    ) -> None:
        self._stack = stack
        self._headers = {"authorization": f"Bearer {key}"} if key else stack.auth
        self._model = model
        self._clients = clients
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.outcomes: list[StreamOutcome] = []

    async def __aenter__(self) -> SteadyLoad:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self._clients * 2)
        async with httpx.AsyncClient(
            base_url=self._stack.base_url, headers=self._headers, timeout=60, limits=limits
        ) as client:

            async def loop() -> None:
                while not self._stop.is_set():
                    self.outcomes.append(await stream_outcome(client, self._model))

            await asyncio.gather(*(loop() for _ in range(self._clients)))

    def since(self, moment: float) -> list[StreamOutcome]:
        """The outcomes of the streams that started at or after `moment`."""
        return [outcome for outcome in self.outcomes if outcome.started >= moment]


async def steady_load(
    stack: FrugalStack, model: str, stop: asyncio.Event, clients: int
) -> list[bool]:
    """`clients` closed loops of streams until `stop` is set; each stream's outcome."""
    async with SteadyLoad(stack, model, clients) as load:
        await stop.wait()
    return [outcome.done for outcome in load.outcomes]


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    """Whether `check` came true within `seconds` (asked every 0.2 s)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return False


async def seconds_until(check: Callable[[], Awaitable[bool]], seconds: float) -> float | None:
    """How long `check` took to come true (asked every 0.05 s), or None past `seconds`."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if await check():
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    return None
