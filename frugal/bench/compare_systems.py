"""The systems `frugal bench compare` drives, registered by name (I/O layer: processes).

Each system is an async context manager that starts what it needs in front of the shared
engines, yields a `SystemRun` (a driver factory, connections -> driver, and for a Frugal
stack the probe that reads its processes, Envoy and Redis), and stops everything on exit,
whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from control_plane.config_file import load_config
from frugal.bench.compare_fleet import (
    BARE,
    BENCH_KEY_SPEC,
    FULL,
    NOREDACT,
    RLS,
    VARIANTS,
    GatewayPorts,
    frugal_config,
    litellm_config,
    rate_limit_setting_exists,
)
from frugal.bench.compare_plan import ComparePlan
from frugal.bench.compare_probe import StackAddresses, StackProbe
from frugal.bench.driver import Driver
from frugal.bench.grpc_driver import GrpcDriver
from frugal.bench.http_driver import HttpDriver, Target
from frugal.bench.ports import PortPicker
from frugal.cli.stack import ChildSpec, StackFiles
from frugal.cli.supervisor import LogSink, Supervisor
from frugal.cli.up import admin_url, api_url, start_stack

MakeDriver = Callable[[int], AbstractAsyncContextManager[Driver]]
READY_TIMEOUT_S = 60.0
LITELLM_BIN_ENV = "FRUGAL_LITELLM_BIN"
DEFAULT_MAX_REQUEST_BYTES = 1 << 20
MAX_REQUEST_BYTES = 64 << 20  # listener.max_request_bytes' upper bound


class SystemFailed(Exception):
    pass


@dataclass(frozen=True)
class SystemContext:
    plan: ComparePlan
    engines: tuple[str, ...]
    root: Path  # a scratch directory for this run
    sink: LogSink


@dataclass(frozen=True)
class SystemRun:
    make_driver: MakeDriver
    probe: StackProbe | None = None  # a Frugal stack's; None for the other systems


def _http(plan: ComparePlan, target: Target) -> MakeDriver:
    return lambda connections: HttpDriver(
        target, connections, stream=plan.stream, timeout_s=plan.timeout_s
    )


async def wait_until_ok(url: str, supervisor: Supervisor, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2.0, headers=headers) as client:
        while time.monotonic() < deadline:
            if (dead := supervisor.dead()) is not None:
                raise SystemFailed(f"{dead[0]} exited with {dead[1]} during start-up")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.25)
    raise SystemFailed(f"{url} did not answer in {READY_TIMEOUT_S:.0f} s")


@contextlib.asynccontextmanager
async def direct(context: SystemContext) -> AsyncIterator[SystemRun]:
    plan = context.plan

    def make(connections: int) -> AbstractAsyncContextManager[Driver]:
        return GrpcDriver(context.engines, plan.model, stream=plan.stream, timeout_s=plan.timeout_s)

    yield SystemRun(make)


async def _bench_key(config_admin_url: str, files: StackFiles) -> tuple[str, str]:
    """(the key, its id) of a key made for the benchmark alone, so the ledger's rows for it
    are the run's."""
    token = files.admin_token.read_text().strip()
    async with httpx.AsyncClient(
        base_url=config_admin_url, headers={"authorization": f"Bearer {token}"}, timeout=5.0
    ) as admin:
        response = await admin.post("/admin/v1/keys", json=BENCH_KEY_SPEC)
        response.raise_for_status()
        created = response.json()
        return str(created["key"]), str(created["record"]["id"])


def _max_request_bytes(plan: ComparePlan) -> int | None:
    """A listener body cap that admits the plan's prompts (JSON around them included)."""
    wanted = 2 * (plan.prompt_bytes or 0) + (64 << 10)
    return min(wanted, MAX_REQUEST_BYTES) if wanted > DEFAULT_MAX_REQUEST_BYTES else None


def _ports(plan: ComparePlan) -> GatewayPorts:
    picker = PortPicker()
    listener, xds, envoy_admin = picker.take(), picker.take(), picker.take()
    safety = picker.take_consecutive(plan.safety_processes)
    metrics = picker.take_consecutive(plan.safety_processes)
    return GatewayPorts(listener, xds, envoy_admin, safety, metrics, picker.take(), picker.take())


@contextlib.asynccontextmanager
async def frugal_stack(
    context: SystemContext, variant: str
) -> AsyncIterator[tuple[Target, StackProbe]]:
    """A Frugal stack (Redis, safety filter, control plane, Envoy) in front of the engines."""
    plan = context.plan
    ports = _ports(plan)
    root = context.root / variant
    root.mkdir(parents=True, exist_ok=True)
    data = frugal_config(
        plan.model, context.engines, ports, VARIANTS[variant], time_scale=plan.time_scale,
        redis_dir=str(root / "redis"), safety_processes=plan.safety_processes,
        max_request_bytes=_max_request_bytes(plan),
    )  # fmt: skip
    config_path = root / "frugal.yaml"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    config = load_config(config_path)
    supervisor = Supervisor(sink=context.sink)
    files = StackFiles(root / "var")
    try:
        key = await start_stack(config, config_path, files, supervisor, engines=False)
        key_id = None
        if VARIANTS[variant].enforce:
            key, key_id = await _bench_key(admin_url(config), files)
        safety = config.safety_filter
        metrics_urls = (
            tuple(
                f"http://127.0.0.1:{safety.metrics_port + i}/metrics"
                for i in range(safety.processes)
            )
            if safety.metrics_port
            else ()
        )
        addresses = StackAddresses(
            f"http://127.0.0.1:{config.envoy.admin_port}", config.redis.url, context.engines,
            key_id, metrics_urls,
        )  # fmt: skip
        target = Target(api_url(config), {"authorization": f"Bearer {key}"}, plan.model)
        async with StackProbe(supervisor, addresses) as probe:
            yield target, probe
    finally:
        await asyncio.shield(supervisor.stop())


def _frugal(variant: str) -> Callable[[SystemContext], AbstractAsyncContextManager[SystemRun]]:
    @contextlib.asynccontextmanager
    async def run(context: SystemContext) -> AsyncIterator[SystemRun]:
        async with frugal_stack(context, variant) as (target, probe):
            yield SystemRun(_http(context.plan, target), probe)

    return run


@contextlib.asynccontextmanager
async def _process(context: SystemContext, spec: ChildSpec, url: str) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(sink=context.sink)
    try:
        await supervisor.start(spec)
        await wait_until_ok(url, supervisor, {})
        yield supervisor
    finally:
        await asyncio.shield(supervisor.stop())


@contextlib.asynccontextmanager
async def fastapi(context: SystemContext) -> AsyncIterator[SystemRun]:
    """The paper's baseline: frugal/bench/baselines/fastapi_gateway.py, one uvicorn process."""
    port = PortPicker().take()
    argv = (
        sys.executable, "-m", "frugal.bench.baselines.fastapi_gateway",
        "--port", str(port), "--model", context.plan.model,
        "--replicas", ",".join(context.engines),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    async with _process(context, ChildSpec("fastapi", argv), base + "/v1/models"):
        yield SystemRun(_http(context.plan, Target(base, {}, context.plan.model)))


def litellm_binary() -> str | None:
    """$FRUGAL_LITELLM_BIN (`make bench-compare` points it at .venv-litellm), or PATH."""
    return os.environ.get(LITELLM_BIN_ENV) or shutil.which("litellm")


@contextlib.asynccontextmanager
async def litellm(context: SystemContext) -> AsyncIterator[SystemRun]:
    """LiteLLM's proxy (one worker) in front of Frugal's bare route: its master key checked
    on every request, its per-deployment rpm and tpm limits enforced (compare_fleet)."""
    binary = litellm_binary()
    if binary is None:
        raise SystemFailed(f"no litellm binary (PATH or ${LITELLM_BIN_ENV})")
    async with frugal_stack(context, BARE) as (frugal, _):
        port = PortPicker().take()
        config_path = context.root / "litellm.yaml"
        master_key = "sk-" + secrets.token_hex(16)
        config = litellm_config(context.plan.model, frugal.base_url + "/v1", master_key)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = (binary, "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port))
        # No hub download of the model cost map: these machines may have no internet.
        spec = ChildSpec("litellm", argv, {"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
        base = f"http://127.0.0.1:{port}"
        async with _process(context, spec, base + "/health/liveliness"):
            headers = {"authorization": f"Bearer {master_key}"}
            yield SystemRun(_http(context.plan, Target(base, headers, context.plan.model)))


def _litellm_missing() -> str | None:
    if litellm_binary() is not None:
        return None
    return (
        "litellm is not installed (`make bench-tools`, or pip install 'litellm[proxy]', "
        f"or set ${LITELLM_BIN_ENV})"
    )


def _rate_limit_missing() -> str | None:
    if rate_limit_setting_exists():
        return None
    return "this Frugal's config has no `safety_filter.rate_limit` setting yet"


@dataclass(frozen=True)
class System:
    run: Callable[[SystemContext], AbstractAsyncContextManager[SystemRun]]
    # Why it cannot run on this machine (None: it can).
    missing: Callable[[], str | None] = lambda: None


SYSTEMS: dict[str, System] = {
    "direct": System(direct),
    FULL: System(_frugal(FULL)),
    NOREDACT: System(_frugal(NOREDACT)),
    RLS: System(_frugal(RLS), _rate_limit_missing),
    BARE: System(_frugal(BARE)),
    "fastapi": System(fastapi),
    "litellm": System(litellm, _litellm_missing),
}
