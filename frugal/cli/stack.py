"""What `frugal up` runs: one child process per part of the stack, planned from the config.

Pure layer: `plan_stack` turns a FrugalConfig into process specs (argv + env);
supervisor.py runs them. Tests plan the same stack on their own ports.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from control_plane.model import FrugalConfig
from frugal.cli.stack_ports import check_stack_ports
from frugal.wire import engine_metrics_port

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    # The stack stops when an essential child exits; others are reported and routed around.
    essential: bool = False


def find_envoy() -> str:
    """The real Envoy binary: $FRUGAL_ENVOY_BIN, the project's own venv, or PATH."""
    candidates = [os.environ.get("FRUGAL_ENVOY_BIN"), str(REPO_ROOT / ".venv-envoy/bin/envoy")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no Envoy binary: run `make setup` or set FRUGAL_ENVOY_BIN")
    return found


def _python_module(module: str) -> tuple[str, ...]:
    return (sys.executable, "-m", module)


def engine_worker_specs(config: FrugalConfig) -> list[ChildSpec]:
    specs = []
    for model in config.models:
        for group in model.groups:
            parameters = json.dumps(config.profiles[group.profile])
            for index, endpoint in enumerate(group.replicas):
                env = {
                    "FRUGAL_ENGINE_HOST": endpoint.host,
                    "FRUGAL_ENGINE_PORT": str(endpoint.port),
                    "FRUGAL_ENGINE_METRICS_PORT": str(engine_metrics_port(endpoint.port)),
                    "FRUGAL_ENGINE_MODEL": model.name,
                    "FRUGAL_ENGINE_GROUP": group.name,
                    "FRUGAL_ENGINE_BACKEND": model.backend,
                    "FRUGAL_ENGINE_ECHO": str(model.echo).lower(),
                    "FRUGAL_ENGINE_PROFILE": group.profile,
                    "FRUGAL_ENGINE_PARAMETERS": parameters,
                    # What a stream sends before its first token (frugal.yaml `streams`).
                    "FRUGAL_ENGINE_HEADERS_AFTER_S": str(config.streams.headers_after_s),
                    "FRUGAL_ENGINE_KEEPALIVE_INTERVAL_S": str(config.streams.keepalive_interval_s),
                }
                name = f"engine:{model.name}/{group.name}/{index}"
                specs.append(ChildSpec(name, _python_module("engine_workers"), env))
    return specs


@dataclass(frozen=True)
class StackFiles:
    """Where a running stack keeps its generated files (under var/ for `frugal up`)."""

    directory: Path

    @property
    def bootstrap(self) -> Path:
        return self.directory / "envoy-bootstrap.yaml"

    @property
    def pepper(self) -> Path:
        return self.directory / "secrets" / "key-peppers.json"

    @property
    def admin_token(self) -> Path:
        return self.directory / "secrets" / "admin-token"

    @property
    def demo_key(self) -> Path:
        return self.directory / "secrets" / "demo-key"


def redis_spec(config: FrugalConfig, files: StackFiles) -> ChildSpec | None:
    """A redis-server for a managed, loopback Redis URL (data kept across restarts)."""
    if not config.redis.managed:
        return None
    url = urlsplit(config.redis.url)
    if url.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError(f"redis.url: a managed Redis must be on loopback, not {url.hostname}")
    data_dir = Path(config.redis.data_dir)
    if not data_dir.is_absolute():
        data_dir = files.directory.parent / data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = (
        shutil.which("redis-server") or "redis-server",
        "--port", str(url.port or 6379),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        # API keys, policies and the usage ledger must survive a restart: an append-only
        # file written on every change and fsynced once a second (Redis's persistence docs:
        # "everysec" loses at most a second of writes on a crash, at almost no cost), with
        # a snapshot every minute as well, as compose.yaml runs it.
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "60 1",
        "--loglevel", "warning",
    )  # fmt: skip
    return ChildSpec("redis", argv, essential=True)


def _policies(config: FrugalConfig) -> str:
    per_model = {m.name: m.content_policy for m in config.models if m.content_policy is not None}
    return json.dumps({"default": config.safety_filter.content_policy, "models": per_model})


def safety_filter_specs(config: FrugalConfig, shared: dict[str, str]) -> list[ChildSpec]:
    """One process per configured port; the first is named `safety_filter`."""
    safety = config.safety_filter
    specs = []
    for index, port in enumerate(safety.ports()):
        metrics_port = safety.metrics_port + index if safety.metrics_port else 0
        env = {
            **shared,
            "FRUGAL_SAFETY_HOST": safety.host,
            "FRUGAL_SAFETY_PORT": str(port),
            "FRUGAL_SAFETY_MODELS": json.dumps(sorted(m.name for m in config.models)),
            "FRUGAL_SAFETY_MAX_BODY_BYTES": str(config.listener.max_request_bytes),
            "FRUGAL_SAFETY_POLICIES": _policies(config),
            "FRUGAL_SAFETY_METRICS_PORT": str(metrics_port),
            "FRUGAL_SAFETY_ENFORCE": str(safety.enforce).lower(),
            "FRUGAL_SAFETY_RATE_LIMIT": safety.rate_limit,
            "FRUGAL_SAFETY_ADMITTING": str(safety.admitting),
            "FRUGAL_SAFETY_ADMIT_WAIT_S": str(safety.admit_wait_s),
            "FRUGAL_SAFETY_PREFIX_BLOCK_CHARS": str(safety.prefix_block_chars),
        }
        name = "safety_filter" if index == 0 else f"safety_filter/{index}"
        specs.append(ChildSpec(name, _python_module("safety_filter"), env, essential=True))
    return specs


def plan_stack(
    config: FrugalConfig, config_path: Path, files: StackFiles, *, engines: bool = True
) -> list[ChildSpec]:
    """Children in start order: Redis, engines, safety filter, control plane, then Envoy.
    Without `engines`, the config's replicas are workers that already run (a benchmark's).
    Raises ValueError when two parts would bind one port."""
    check_stack_ports(config, engines=engines)
    shared = {
        "FRUGAL_REDIS_URL": config.redis.url,
        "FRUGAL_REDIS_CLUSTER": str(config.redis.cluster).lower(),
        "FRUGAL_KEY_PEPPER_FILE": str(files.pepper),
    }
    control_plane = ChildSpec(
        "control_plane",
        _python_module("control_plane"),
        {
            **shared,
            "FRUGAL_CP_CONFIG": str(config_path),
            # Relative paths of the config (the access log) resolve next to var/.
            "FRUGAL_CP_BASE_DIR": str(files.directory.parent),
            "FRUGAL_ADMIN_TOKEN_FILE": str(files.admin_token),
        },
    )
    envoy = ChildSpec(
        "envoy",
        (
            find_envoy(),
            "-c", str(files.bootstrap),
            "--use-dynamic-base-id",
            "--log-level", "warn",
            "--drain-time-s", "2",
            # Access-log lines reach the file within a second (Envoy's default: 10 s).
            "--file-flush-interval-msec", "1000",
        ),
        essential=True,
    )  # fmt: skip
    redis = redis_spec(config, files)
    return [
        *([redis] if redis else []),
        *(engine_worker_specs(config) if engines else []),
        *safety_filter_specs(config, shared),
        control_plane,
        envoy,
    ]
