"""`frugal up`: run the whole stack in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from control_plane.config_file import ConfigError, load_config
from control_plane.load_sampler import LoadSampler
from control_plane.model import FrugalConfig
from engine_workers.backends import validate_parameters
from frugal.cli.demo_key import ensure_demo_key
from frugal.cli.envoy_bootstrap import write_bootstrap
from frugal.cli.stack import REPO_ROOT, StackFiles, plan_stack
from frugal.cli.stack_ports import check_stack_ports
from frugal.cli.supervisor import Supervisor, describe_exit
from frugal.keys.admin_token import ensure_admin_token_file
from frugal.keys.hashing import ensure_pepper_file

READY_TIMEOUT_S = 90.0
# Replicas may take longer than the API: the first start of the transformers backend
# converts its model once (~30 s here), and each worker loads its weights.
REPLICAS_TIMEOUT_S = 300.0
T = TypeVar("T")


class StackFailed(Exception):
    pass


def check_profiles(config: FrugalConfig) -> None:
    """Engine profiles are opaque to the control plane; the backend of each model that uses
    a profile validates it here, before anything starts."""
    for model in config.models:
        for group in model.groups:
            try:
                validate_parameters(model.backend, config.profiles[group.profile])
            except ValidationError as error:
                first = error.errors()[0]
                field = ".".join(str(p) for p in first["loc"])
                raise ConfigError(f"profiles.{group.profile}.{field}: {first['msg']}") from error
            except ValueError as error:
                raise ConfigError(f"models.{model.name}.backend: {error}") from error


def api_url(config: FrugalConfig) -> str:
    return f"http://{config.listener.host}:{config.listener.port}"


def admin_url(config: FrugalConfig) -> str:
    return f"http://{config.admin.host}:{config.admin.port}"


async def _until_ok(url: str, headers: dict[str, str], supervisor: Supervisor) -> None:
    """Until GET `url` answers 200, or a child dies, or the start-up time runs out."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2.0, headers=headers) as client:
        while time.monotonic() < deadline:
            if (dead := supervisor.dead()) is not None:
                raise StackFailed(f"{dead[0]} {describe_exit(dead[1])} during start-up")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.25)
    raise StackFailed(f"{url} did not answer in {READY_TIMEOUT_S:.0f} s")


def prepare_files(config: FrugalConfig, files: StackFiles) -> None:
    """Secrets (created once, 0600) and Envoy's bootstrap, under `files.directory`."""
    ensure_pepper_file(files.pepper)
    ensure_admin_token_file(files.admin_token)
    write_bootstrap(config, files.bootstrap)


async def start_stack(
    config: FrugalConfig,
    config_path: Path,
    files: StackFiles,
    supervisor: Supervisor,
    *,
    engines: bool = True,
) -> str:
    """Start every child (the engine workers too, unless told they run already) and wait
    until the API serves; returns the demo API key."""
    prepare_files(config, files)
    for spec in plan_stack(config, config_path, files, engines=engines):
        await supervisor.start(spec)
    token = files.admin_token.read_text().strip()
    admin_headers = {"authorization": f"Bearer {token}"}
    await _until_ok(admin_url(config) + "/admin/v1/keys", admin_headers, supervisor)
    key = await ensure_demo_key(admin_url(config), files)
    api_headers = {"authorization": f"Bearer {key}"}
    await _until_ok(api_url(config) + "/v1/models", api_headers, supervisor)
    if engines:
        missing = await _until_replicas_healthy(config, supervisor)
        if missing:
            print(
                f"frugal up: not yet healthy after {REPLICAS_TIMEOUT_S:.0f} s, routed around "
                f"until they are: {', '.join(sorted(missing))}",
                file=sys.stderr,
                flush=True,
            )
    return key


async def _until_replicas_healthy(config: FrugalConfig, supervisor: Supervisor) -> set[str]:
    """Wait until Envoy's health checks pass on every configured replica, so the first
    request after the banner finds its model served; returns the replicas still not healthy
    when the time runs out. A replica listed healthy within a second of another may take
    requests only a second later (update_merge_window, control_plane/translate/clusters.py)."""
    expected = {str(e) for m in config.models for g in m.groups for e in g.replicas}
    sampler = LoadSampler([f"http://127.0.0.1:{config.envoy.admin_port}"], timeout_s=2.0)
    deadline = time.monotonic() + REPLICAS_TIMEOUT_S
    try:
        while True:
            if (dead := supervisor.dead()) is not None:
                raise StackFailed(f"{dead[0]} {describe_exit(dead[1])} during start-up")
            hosts = await sampler.hosts()
            healthy = {a for cluster in hosts.values() for a, h in cluster.items() if h.healthy}
            if expected <= healthy or time.monotonic() > deadline:
                return expected - healthy
            await asyncio.sleep(0.25)
    finally:
        await sampler.close()


def banner(config: FrugalConfig, key: str) -> str:
    url = api_url(config)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    body = json.dumps({"model": config.models[0].name, "messages": question})
    return "\n".join(
        [
            "",
            f"Frugal is serving the OpenAI API on {url}/v1",
            f"  models: {', '.join(m.name for m in config.models)}",
            f"  demo API key: {key}",
            f"  admin REST: {admin_url(config)}/admin/docs (token in var/secrets/admin-token)",
            "  try:",
            f"    export OPENAI_API_KEY={key}",
            f"    curl -s {url}/v1/chat/completions \\",
            '      -H "authorization: Bearer $OPENAI_API_KEY" \\',
            f"      -H 'content-type: application/json' -d '{body}'",
            "  Ctrl-C stops everything.",
            "",
        ]
    )


async def run_stack(config: FrugalConfig, config_path: Path) -> int:
    files = StackFiles(REPO_ROOT / "var")
    supervisor = Supervisor()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopped = asyncio.create_task(stop.wait())
    try:
        key = await _unless_stopped(start_stack(config, config_path, files, supervisor), stopped)
        if key is None:
            return 130
        print(banner(config, key), flush=True)
        essential_exit = await _unless_stopped(supervisor.wait_essential_exit(), stopped)
        if essential_exit is not None:
            name, code = essential_exit
            raise StackFailed(f"{name} {describe_exit(code)}; stopping the stack")
        return 0
    except StackFailed as failure:
        print(f"frugal up: {failure}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("frugal up: stopping", file=sys.stderr, flush=True)
        await supervisor.stop()


async def _unless_stopped(work: Coroutine[Any, Any, T], stopped: asyncio.Task[Any]) -> T | None:
    """`work`'s result, or None if Ctrl-C / SIGTERM comes first (then `work` is cancelled)."""
    task = asyncio.create_task(work)
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    return None


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("up", help="run the whole stack in the foreground")
    parser.add_argument("-c", "--config", type=Path, default=Path("frugal.yaml"))
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        check_profiles(config)
        check_stack_ports(config)
    except (ConfigError, ValueError) as error:
        print(f"frugal up: {error}", file=sys.stderr)
        return 2
    return asyncio.run(run_stack(config, args.config.resolve()))
