"""The two systems `frugal bench engine` drives, registered by name (I/O layer: a model in
this process, or a whole stack of child processes).

`in-process`: the served model's backend built here, as a worker builds it, and each request
sent straight into its `generate` (no gRPC, no HTTP). `frugal`: the whole chain, started by
`frugal up`'s own code (Redis, one engine worker of the same profile, safety filter with keys
and content checks on, control plane, Envoy), driven over HTTP with the stack's API key.
Each system is an async context manager that yields a driver factory and stops everything
it started on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import yaml

from control_plane.config_file import load_config
from engine_workers.backends import build_backend
from engine_workers.engine import ChatMessage, EngineBackend, GenerationRequest, PromptInput
from engine_workers.errors import EngineError
from engine_workers.settings import EngineSettings
from frugal.bench.compare_fleet import GatewayPorts
from frugal.bench.driver import BenchRequest, Driver, streamed_sample
from frugal.bench.engine_plan import FRUGAL, IN_PROCESS, EnginePlan, stack_config
from frugal.bench.http_driver import HttpDriver, Target
from frugal.bench.ports import PortPicker
from frugal.bench.stats import RequestSample
from frugal.cli.stack import StackFiles
from frugal.cli.supervisor import LogSink, Supervisor
from frugal.cli.up import api_url, start_stack

MakeDriver = Callable[[int], AbstractAsyncContextManager[Driver]]


@dataclass(frozen=True)
class EngineContext:
    plan: EnginePlan
    root: Path  # a scratch directory for this run
    sink: LogSink


class InProcessDriver:
    """Chat requests into a backend of this process; every delta with text is timed as it
    comes out of `generate`, the way the HTTP driver times content chunks."""

    def __init__(self, backend: EngineBackend, timeout_s: float) -> None:
        self._backend = backend
        self._timeout_s = timeout_s
        self._ids = itertools.count()

    async def send(self, request: BenchRequest, started: float | None = None) -> RequestSample:
        start = time.perf_counter() if started is None else started
        arrivals: list[float] = []
        tokens: int | None = None
        generation = self._generation(request)
        try:
            async with asyncio.timeout(self._timeout_s):
                async for delta in self._backend.generate(generation):
                    if delta.text:
                        arrivals.append(time.perf_counter())
                    if delta.usage is not None:
                        tokens = delta.usage.completion_tokens
        except TimeoutError:
            return RequestSample(ok=False, timed_out=True, error="timeout")
        except EngineError as error:
            return RequestSample(ok=False, error=f"engine: {type(error).__name__}")
        finally:
            # A generator left by a timeout is closed only by the garbage collector; the
            # worker's core aborts the same way.
            self._backend.abort(generation.request_id)
        return streamed_sample(start, time.perf_counter(), arrivals, tokens)

    def _generation(self, request: BenchRequest) -> GenerationRequest:
        """What the worker's core builds for a chat request (rendering is timed too: the
        worker renders after the request arrived)."""
        messages = (ChatMessage("user", request.prompt),)
        rendered = self._backend.render_prompt(PromptInput(messages=messages))
        return GenerationRequest(
            request_id=f"bench-{next(self._ids)}",
            prompt=rendered.text,
            prompt_tokens=rendered.token_count,
            prompt_token_ids=rendered.token_ids,
            messages=messages,
            max_tokens=request.max_tokens,
            seed=request.seed,
            temperature=request.temperature,
        )


@contextlib.asynccontextmanager
async def in_process(context: EngineContext) -> AsyncIterator[MakeDriver]:
    plan, model = context.plan, context.plan.model
    settings = EngineSettings(
        model=model.name,
        group=model.group,
        backend=model.backend,
        echo=model.echo,
        profile=model.profile,
        parameters=model.parameters,
    )
    backend = build_backend(settings)
    try:
        await backend.start()
        driver = InProcessDriver(backend, plan.timeout_s)
        yield lambda connections: contextlib.nullcontext(driver)
    finally:
        await asyncio.shield(backend.stop())


@contextlib.asynccontextmanager
async def frugal(context: EngineContext) -> AsyncIterator[MakeDriver]:
    plan = context.plan
    picker = PortPicker()
    ports = GatewayPorts(*(picker.take() for _ in range(7)))
    root = context.root / FRUGAL
    root.mkdir(parents=True, exist_ok=True)
    data = stack_config(plan.model, ports, picker.take(engine=True), str(root / "redis"))
    config_path = root / "frugal.yaml"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    config = load_config(config_path)
    supervisor = Supervisor(sink=context.sink)
    try:
        key = await start_stack(config, config_path, StackFiles(root / "var"), supervisor)
        target = Target(api_url(config), {"authorization": f"Bearer {key}"}, plan.model.name)
        yield lambda connections: HttpDriver(
            target, connections, stream=True, timeout_s=plan.timeout_s
        )
    finally:
        await asyncio.shield(supervisor.stop())


# In the order they run and appear in the outputs.
SYSTEMS: dict[str, Callable[[EngineContext], AbstractAsyncContextManager[MakeDriver]]] = {
    IN_PROCESS: in_process,
    FRUGAL: frugal,
}
