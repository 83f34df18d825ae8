"""The systems `frugal bench compare` drives, registered by name (I/O layer: processes).

Each system is an async context manager that starts what it needs in front of the shared
engines, yields a driver factory (connections -> driver), and stops everything on exit,
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
from frugal.bench.compare_fleet import GatewayPorts, frugal_config, litellm_config
from frugal.bench.compare_plan import ComparePlan
from frugal.bench.driver import Driver
from frugal.bench.grpc_driver import GrpcDriver
from frugal.bench.http_driver import HttpDriver, Target
from frugal.bench.ports import PortPicker
from frugal.cli.stack import REPO_ROOT, ChildSpec, StackFiles
from frugal.cli.supervisor import LogSink, Supervisor
from frugal.cli.up import admin_url, api_url, start_stack

MakeDriver = Callable[[int], AbstractAsyncContextManager[Driver]]
READY_TIMEOUT_S = 60.0
LITELLM_BIN_ENV = "FRUGAL_LITELLM_BIN"


class SystemFailed(Exception):
    pass


@dataclass(frozen=True)
class SystemContext:
    plan: ComparePlan
    engines: tuple[str, ...]
    root: Path  # a scratch directory for this run
    sink: LogSink


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
async def direct(context: SystemContext) -> AsyncIterator[MakeDriver]:
    plan = context.plan

    def make(connections: int) -> AbstractAsyncContextManager[Driver]:
        return GrpcDriver(context.engines, plan.model, stream=plan.stream, timeout_s=plan.timeout_s)

    yield make


async def _unlimited_key(config_admin_url: str, files: StackFiles) -> str:
    """A key without rpm or tpm limits: the benchmark measures the chain's cost, not its
    refusals (the limits are still looked up and counted on every request)."""
    token = files.admin_token.read_text().strip()
    async with httpx.AsyncClient(
        base_url=config_admin_url, headers={"authorization": f"Bearer {token}"}, timeout=5.0
    ) as admin:
        response = await admin.post("/admin/v1/keys", json={"name": "bench", "tenant": "bench"})
        response.raise_for_status()
        return str(response.json()["key"])


@contextlib.asynccontextmanager
async def frugal_stack(context: SystemContext, *, enforce: bool) -> AsyncIterator[Target]:
    """A Frugal stack (Redis, safety filter, control plane, Envoy) in front of the engines."""
    picker = PortPicker()
    ports = GatewayPorts(*(picker.take() for _ in range(7)))
    variant = "full" if enforce else "bare"
    root = context.root / f"frugal-{variant}"
    root.mkdir(parents=True, exist_ok=True)
    data = frugal_config(
        context.plan.model, context.engines, ports, enforce=enforce,
        time_scale=context.plan.time_scale, redis_dir=str(root / "redis"),
    )  # fmt: skip
    config_path = root / "frugal.yaml"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    config = load_config(config_path)
    supervisor = Supervisor(sink=context.sink)
    files = StackFiles(root / "var")
    try:
        demo_key = await start_stack(config, config_path, files, supervisor, engines=False)
        key = await _unlimited_key(admin_url(config), files) if enforce else demo_key
        yield Target(api_url(config), {"authorization": f"Bearer {key}"}, context.plan.model)
    finally:
        await asyncio.shield(supervisor.stop())


@contextlib.asynccontextmanager
async def frugal_full(context: SystemContext) -> AsyncIterator[MakeDriver]:
    async with frugal_stack(context, enforce=True) as target:
        yield _http(context.plan, target)


@contextlib.asynccontextmanager
async def frugal_bare(context: SystemContext) -> AsyncIterator[MakeDriver]:
    async with frugal_stack(context, enforce=False) as target:
        yield _http(context.plan, target)


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
async def fastapi(context: SystemContext) -> AsyncIterator[MakeDriver]:
    """The paper's baseline: tests/benchmarks/fastapi_gateway.py, one uvicorn process."""
    port = PortPicker().take()
    argv = (
        sys.executable, "-m", "tests.benchmarks.fastapi_gateway",
        "--port", str(port), "--model", context.plan.model,
        "--replicas", ",".join(context.engines),
    )  # fmt: skip
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    }
    base = f"http://127.0.0.1:{port}"
    async with _process(context, ChildSpec("fastapi", argv, env), base + "/v1/models"):
        yield _http(context.plan, Target(base, {}, context.plan.model))


def litellm_binary() -> str | None:
    return os.environ.get(LITELLM_BIN_ENV) or shutil.which("litellm")


@contextlib.asynccontextmanager
async def litellm(context: SystemContext) -> AsyncIterator[MakeDriver]:
    """LiteLLM's proxy (one worker) in front of Frugal's bare route."""
    binary = litellm_binary()
    if binary is None:
        raise SystemFailed(f"no litellm binary (PATH or ${LITELLM_BIN_ENV})")
    async with frugal_stack(context, enforce=False) as frugal:
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
            yield _http(context.plan, Target(base, headers, context.plan.model))


def _litellm_missing() -> str | None:
    if litellm_binary() is not None:
        return None
    return f"litellm is not installed (pip install 'litellm[proxy]', or set ${LITELLM_BIN_ENV})"


@dataclass(frozen=True)
class System:
    run: Callable[[SystemContext], AbstractAsyncContextManager[MakeDriver]]
    # Why it cannot run on this machine (None: it can).
    missing: Callable[[], str | None] = lambda: None


SYSTEMS: dict[str, System] = {
    "direct": System(direct),
    "frugal": System(frugal_full),
    "frugal-bare": System(frugal_bare),
    "fastapi": System(fastapi),
    "litellm": System(litellm, _litellm_missing),
}
