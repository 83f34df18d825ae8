"""The `openai` backend: forwards each sequence to an OpenAI-compatible engine server (vLLM,
SGLang, trtllm-serve, llama.cpp, TGI, `transformers serve`, another Frugal) (backend layer,
asyncio + aiohttp; the protocol itself is the pure `openai_upstream_protocol`).

Every request is streamed upstream over one pooled aiohttp session, usage included, and its
chunks are handed on as `Delta`s. Closing a sequence's iterator, or `abort`, closes its
upstream response, so the upstream sees the disconnect and stops generating. Load figures
come from the upstream's Prometheus metrics, polled in the background; where it has none,
running is the requests in flight here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from engine_workers.backends.openai_upstream_parameters import OpenAIUpstreamParameters
from engine_workers.backends.openai_upstream_protocol import (
    StreamAssembler,
    UpstreamLoad,
    build_upstream_request,
    load_snapshot,
    parse_load_metrics,
    upstream_error,
)
from engine_workers.engine import (
    Delta,
    GenerationRequest,
    LoadSnapshot,
    PromptInput,
    RenderedPrompt,
)
from engine_workers.errors import (
    EngineError,
    EngineFaultError,
    EngineUnavailableError,
    InvalidRequestError,
)
from engine_workers.prompt import render_role_tagged

if TYPE_CHECKING:
    from engine_workers.settings import EngineSettings

logger = logging.getLogger(__name__)


@dataclass
class _InFlight:
    """One sequence under way upstream; `abort` closes its response."""

    response: aiohttp.ClientResponse | None = None
    aborted: str | None = None  # why, once aborted

    def close(self, reason: str) -> None:
        self.aborted = self.aborted or reason
        if self.response is not None:
            self.response.close()


class OpenAIUpstreamBackend:
    """An upstream OpenAI-compatible server behind one worker; see the module docstring."""

    def __init__(
        self, parameters: OpenAIUpstreamParameters, *, model: str, api_key: str | None
    ) -> None:
        self._parameters = parameters
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None
        self._in_flight: dict[str, _InFlight] = {}
        self._upstream_load: UpstreamLoad | None = None
        self._metrics_found: bool | None = None
        self._tokens_generated = 0

    @property
    def upstream_model(self) -> str:
        return self._model

    async def start(self) -> None:
        if self._session is not None:
            return
        parameters = self._parameters
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=parameters.max_connections),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=parameters.connect_timeout_s,
                sock_read=parameters.read_timeout_s,
            ),
        )
        self._poller = asyncio.create_task(self._poll_metrics(), name="openai-upstream-metrics")

    async def stop(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        for flight in self._in_flight.values():
            flight.close("the engine stopped")
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def render_prompt(self, prompt: PromptInput) -> RenderedPrompt:
        # An estimate for admission and budgets; the upstream's usage is the truth.
        return render_role_tagged(prompt)

    def load(self) -> LoadSnapshot:
        return load_snapshot(
            self._upstream_load,
            in_flight=len(self._in_flight),
            tokens_generated_total=self._tokens_generated,
        )

    def abort(self, request_id: str) -> None:
        flight = self._in_flight.get(request_id)
        if flight is not None:
            flight.close("the request was aborted")
            logger.debug("aborted upstream request %s", request_id)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        session = self._session
        if session is None:
            raise EngineUnavailableError("engine is not running")
        if request.request_id in self._in_flight:
            raise InvalidRequestError(f"duplicate request id {request.request_id!r}")
        flight = self._in_flight[request.request_id] = _InFlight()
        assembler = StreamAssembler(request.prompt_tokens)
        counted = 0
        try:
            response = await self._open(session, request, flight)
            while line := await self._read_line(response, flight):
                delta = assembler.feed(line)
                self._tokens_generated += assembler.completion_tokens - counted
                counted = assembler.completion_tokens
                if delta is not None:
                    yield delta
                if assembler.done:
                    break
            if flight.aborted:
                raise EngineUnavailableError(flight.aborted)
            final = assembler.end()
            if final is not None:
                yield final
        finally:
            self._in_flight.pop(request.request_id, None)
            if flight.response is not None:
                # Released whole after [DONE] or the end of the body, the connection goes back
                # to the pool; a response left part-read is closed, which stops the upstream.
                if assembler.finished and (assembler.done or flight.response.content.at_eof()):
                    flight.response.release()
                else:
                    flight.response.close()

    async def _open(
        self, session: aiohttp.ClientSession, request: GenerationRequest, flight: _InFlight
    ) -> aiohttp.ClientResponse:
        upstream = build_upstream_request(request, self._model)
        url = f"{self._parameters.base_url}/{upstream.path}"
        try:
            response = await session.post(url, json=upstream.body, headers=self._headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._request_error(exc) from exc
        flight.response = response
        if flight.aborted:
            raise EngineUnavailableError(flight.aborted)
        if response.status >= 400:
            try:
                body = await response.text()
            except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
                body = ""
            raise upstream_error(response.status, body, model=self._model, path=upstream.path)
        return response

    async def _read_line(self, response: aiohttp.ClientResponse, flight: _InFlight) -> bytes:
        """The next line of the body, b"" at its end (or once the request is aborted)."""
        try:
            return await response.content.readline()
        except (aiohttp.ClientError, TimeoutError) as exc:
            if flight.aborted:
                return b""
            if isinstance(exc, TimeoutError):
                raise EngineUnavailableError(
                    f"the upstream sent nothing for {self._parameters.read_timeout_s} s"
                ) from exc
            raise EngineFaultError(f"the upstream stream broke off: {exc!r}") from exc

    def _request_error(self, exc: Exception) -> EngineError:
        base_url = self._parameters.base_url
        if isinstance(exc, aiohttp.ClientConnectorError):
            return EngineUnavailableError(f"cannot connect to the upstream at {base_url}: {exc}")
        if isinstance(exc, TimeoutError):
            return EngineUnavailableError(f"the upstream at {base_url} did not answer in time")
        if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
            return EngineUnavailableError(f"the upstream at {base_url} closed the connection")
        return EngineFaultError(f"request to the upstream at {base_url} failed: {exc!r}")

    async def _poll_metrics(self) -> None:
        parameters = self._parameters
        url = parameters.effective_metrics_url
        # A scrape never outlasts its interval, so figures are at most two intervals old.
        timeout = aiohttp.ClientTimeout(total=parameters.metrics_interval_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                load = await _scrape_load(session, url)
                if self._metrics_found is not (load is not None):
                    self._metrics_found = load is not None
                    state = "in use" if load is not None else "unavailable: counting requests"
                    logger.info("upstream load metrics at %s %s", url, state)
                self._upstream_load = load
                await asyncio.sleep(parameters.metrics_interval_s)


async def _scrape_load(session: aiohttp.ClientSession, url: str) -> UpstreamLoad | None:
    try:
        async with session.get(url) as response:
            # Read even a refusal's body: an unread response closes its connection instead of
            # going back to the pool, and an upstream without metrics would get a new
            # connection every interval.
            text = await response.text()
            if response.status != 200:
                return None
        return parse_load_metrics(text)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        logger.debug("scraping %s failed: %r", url, exc)
        return None


def build_openai_backend(settings: EngineSettings) -> OpenAIUpstreamBackend:
    parameters = OpenAIUpstreamParameters.model_validate(settings.parameters)
    api_key = None
    if parameters.api_key_env is not None:
        api_key = os.environ.get(parameters.api_key_env)
        if not api_key:
            raise ValueError(
                f"api_key_env: environment variable {parameters.api_key_env} is not set"
            )
    model = parameters.upstream_model or settings.model
    return OpenAIUpstreamBackend(parameters, model=model, api_key=api_key)
