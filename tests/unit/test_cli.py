"""`frugal up` planning: the child processes, Envoy's bootstrap, and refusal of a bad config."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from control_plane.config_file import ConfigError, load_config
from control_plane.model import FrugalConfig
from engine_workers.backends.sim_model import PROFILES
from engine_workers.settings import EngineSettings
from frugal.cli.__main__ import main
from frugal.cli.envoy_bootstrap import render_bootstrap
from frugal.cli.stack import REPO_ROOT, StackFiles, plan_stack
from frugal.cli.up import check_profiles
from frugal.wire import engine_metrics_port

CONFIG: dict[str, Any] = {
    "listener": {"port": 18080, "max_request_bytes": 4096},
    "control_plane": {"host": "127.0.0.1", "xds_port": 18001},
    "envoy": {"admin_port": 19901, "node_id": "test-node"},
    "safety_filter": {"port": 50999},
    "redis": {"url": "redis://127.0.0.1:16399/0", "data_dir": "redis"},
    "profiles": {"fast": {"a_ms": 1.0, "max_batch": 8}, "slow": {"a_ms": 9.0}},
    "models": [
        {
            "name": "alpha",
            "groups": [
                {"name": "g1", "profile": "fast", "replicas": ["127.0.0.1:7001"]},
                {"name": "g2", "profile": "slow", "replicas": ["127.0.0.1:7002", "127.0.0.1:7003"]},
            ],
        },
        {
            "name": "beta",
            "echo": True,
            "groups": [{"name": "e", "profile": "fast", "replicas": ["127.0.0.1:7004"]}],
        },
    ],
}


@pytest.fixture
def envoy_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A stand-in path for the Envoy binary via $FRUGAL_ENVOY_BIN (plan_stack only names it)."""
    path = tmp_path / "envoy"
    path.write_text("")
    monkeypatch.setenv("FRUGAL_ENVOY_BIN", str(path))
    return str(path)


def config(**profiles: dict[str, Any]) -> FrugalConfig:
    data = json.loads(json.dumps(CONFIG))
    data["profiles"].update(profiles)
    return FrugalConfig.model_validate(data)


def test_plan_stack_starts_engines_then_filter_control_plane_envoy(
    tmp_path: Path, envoy_bin: str
) -> None:
    specs = plan_stack(config(), tmp_path / "frugal.yaml", StackFiles(tmp_path / "var"))
    assert [s.name for s in specs] == [
        "redis",
        "engine:alpha/g1/0",
        "engine:alpha/g2/0",
        "engine:alpha/g2/1",
        "engine:beta/e/0",
        "safety_filter",
        "control_plane",
        "envoy",
    ]


def test_one_engine_per_replica_with_its_settings(tmp_path: Path, envoy_bin: str) -> None:
    specs = plan_stack(config(), tmp_path / "frugal.yaml", StackFiles(tmp_path / "var"))
    engines = [s for s in specs if s.name.startswith("engine:")]
    assert [s.argv for s in engines] == [(sys.executable, "-m", "engine_workers")] * 4
    envs = [
        (
            e.env["FRUGAL_ENGINE_PORT"],
            e.env["FRUGAL_ENGINE_MODEL"],
            e.env["FRUGAL_ENGINE_GROUP"],
            e.env["FRUGAL_ENGINE_ECHO"],
            json.loads(e.env["FRUGAL_ENGINE_PARAMETERS"]),
        )
        for e in engines
    ]
    assert envs == [
        ("7001", "alpha", "g1", "false", {"a_ms": 1.0, "max_batch": 8}),
        ("7002", "alpha", "g2", "false", {"a_ms": 9.0}),
        ("7003", "alpha", "g2", "false", {"a_ms": 9.0}),
        ("7004", "beta", "e", "true", {"a_ms": 1.0, "max_batch": 8}),
    ]
    first = engines[0].env
    assert first["FRUGAL_ENGINE_HOST"] == "127.0.0.1"
    assert first["FRUGAL_ENGINE_METRICS_PORT"] == str(engine_metrics_port(7001))
    assert first["FRUGAL_ENGINE_BACKEND"] == "sim"


def test_the_other_children_get_their_settings(tmp_path: Path, envoy_bin: str) -> None:
    config_path, files = tmp_path / "frugal.yaml", StackFiles(tmp_path / "var")
    redis, *_, safety, control_plane, envoy = plan_stack(config(), config_path, files)
    assert redis.argv[1:5] == ("--port", "16399", "--bind", "127.0.0.1")
    assert redis.argv[6] == str(tmp_path / "redis")
    shared = {
        "FRUGAL_REDIS_URL": "redis://127.0.0.1:16399/0",
        "FRUGAL_REDIS_CLUSTER": "false",
        "FRUGAL_KEY_PEPPER_FILE": str(files.pepper),
    }
    assert safety.argv == (sys.executable, "-m", "safety_filter")
    assert safety.env == {
        **shared,
        "FRUGAL_SAFETY_HOST": "127.0.0.1",
        "FRUGAL_SAFETY_PORT": "50999",
        "FRUGAL_SAFETY_MODELS": '["alpha", "beta"]',
        "FRUGAL_SAFETY_MAX_BODY_BYTES": "4096",
        "FRUGAL_SAFETY_POLICIES": '{"default": {}, "models": {}}',
        "FRUGAL_SAFETY_METRICS_PORT": "0",
        "FRUGAL_SAFETY_ENFORCE": "true",
        "FRUGAL_SAFETY_RATE_LIMIT": "inline",
        "FRUGAL_SAFETY_ADMITTING": "256",
        "FRUGAL_SAFETY_ADMIT_WAIT_S": "2.0",
        "FRUGAL_SAFETY_PREFIX_BLOCK_CHARS": "2048",
    }
    assert control_plane.argv == (sys.executable, "-m", "control_plane")
    assert control_plane.env == {
        **shared,
        "FRUGAL_CP_CONFIG": str(config_path),
        "FRUGAL_CP_BASE_DIR": str(tmp_path),
        "FRUGAL_ADMIN_TOKEN_FILE": str(files.admin_token),
    }
    assert envoy.argv[:3] == (envoy_bin, "-c", str(files.bootstrap))


def test_the_bootstrap_names_node_admin_and_control_plane() -> None:
    bootstrap = yaml.safe_load(render_bootstrap(config()))
    assert bootstrap["node"]["id"] == "test-node"
    assert bootstrap["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 19901,
    }
    (xds,) = bootstrap["static_resources"]["clusters"]
    assert xds["name"] == "xds_cluster"
    (locality,) = xds["load_assignment"]["endpoints"]
    (endpoint,) = locality["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 18001,
    }
    grpc_services = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"]
    (ads,) = grpc_services
    assert ads["envoy_grpc"]["cluster_name"] == "xds_cluster"
    # A returning control plane is found again within seconds, not the default 30 s.
    assert ads["envoy_grpc"]["retry_policy"]["retry_back_off"]["max_interval"] == "3s"


def test_the_bootstrap_xds_port_can_be_overridden() -> None:
    bootstrap = yaml.safe_load(render_bootstrap(config(), xds_port=23456))
    (xds,) = bootstrap["static_resources"]["clusters"]
    address = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"]["port_value"] == 23456


def test_the_bootstrap_lists_every_control_plane_replica_and_the_admin_host() -> None:
    data = config().model_dump(mode="json")
    data["envoy"] |= {"admin_host": "0.0.0.0", "xds_addresses": ["cp-a:18000", "10.0.0.7:18001"]}
    bootstrap = yaml.safe_load(render_bootstrap(FrugalConfig.model_validate(data)))
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "0.0.0.0"
    (xds,) = bootstrap["static_resources"]["clusters"]
    addresses = [
        e["endpoint"]["address"]["socket_address"]
        for e in xds["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert addresses == [
        {"address": "cp-a", "port_value": 18000},
        {"address": "10.0.0.7", "port_value": 18001},
    ]


def test_a_control_plane_address_that_is_not_host_port_is_refused() -> None:
    data = config().model_dump(mode="json")
    data["envoy"]["xds_addresses"] = ["cp-a"]
    with pytest.raises(ValidationError, match="not host:port"):
        FrugalConfig.model_validate(data)


def test_check_profiles_accepts_the_configured_profiles() -> None:
    check_profiles(config())


def used_profile(odd: dict[str, Any]) -> FrugalConfig:
    """The test config with profile `odd` used by a group (unused profiles are not run)."""
    data = config(odd=odd).model_dump(mode="json")
    data["models"][0]["groups"][0]["profile"] = "odd"
    return FrugalConfig.model_validate(data)


def test_check_profiles_refuses_an_unknown_field() -> None:
    with pytest.raises(ConfigError) as caught:
        check_profiles(used_profile({"a_ms": 1.0, "warp_factor": 9}))
    assert str(caught.value).startswith("profiles.odd.warp_factor:")


def test_check_profiles_refuses_an_unknown_backend() -> None:
    data = config().model_dump(mode="json")
    data["models"][0]["backend"] = "warp-drive"
    with pytest.raises(ConfigError) as caught:
        check_profiles(FrugalConfig.model_validate(data))
    assert str(caught.value).startswith("models.alpha.backend: unknown engine backend")


def test_a_worker_loads_its_groups_named_profile(tmp_path: Path, envoy_bin: str) -> None:
    """The tp8 group's worker runs the tp8 KV budget, not the tp2 default (the settings
    the worker actually loads from the environment its launcher gives it)."""
    data = config(tp8={"a_ms": 5.0}).model_dump(mode="json")
    data["models"][0]["groups"][0]["profile"] = "tp8"
    specs = plan_stack(FrugalConfig.model_validate(data), tmp_path / "f.yaml", StackFiles(tmp_path))
    engine = next(s for s in specs if s.name == "engine:alpha/g1/0")
    os_env = {k: v for k, v in engine.env.items() if k.startswith("FRUGAL_ENGINE_")}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in os_env.items():
            patch.setenv(key, value)
        loaded = EngineSettings()
    assert loaded.sim.kv_budget_tokens == PROFILES["tp8"].kv_budget_tokens
    assert loaded.sim.a_ms == 5.0
    assert loaded.sim.max_batch == PROFILES["tp8"].max_batch


def test_check_profiles_refuses_a_negative_duration() -> None:
    with pytest.raises(ConfigError) as caught:
        check_profiles(used_profile({"a_ms": -1.0}))
    assert str(caught.value).startswith("profiles.odd.a_ms:")
    assert "greater than or equal to 0" in str(caught.value)


def test_up_refuses_a_bad_config_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(json.dumps(CONFIG))
    data["listener"]["port"] = 0
    path = tmp_path / "frugal.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["up", "-c", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"frugal up: {path}: ")
    assert "listener.port" in captured.err


def test_up_refuses_a_bad_profile_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(json.dumps(CONFIG))
    data["profiles"]["slow"]["max_batch"] = 0
    path = tmp_path / "frugal.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["up", "-c", str(path)]) == 2
    assert "profiles.slow.max_batch" in capsys.readouterr().err


def test_up_refuses_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "-c", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_two_parts_of_the_stack_on_one_port_are_refused_naming_both(tmp_path: Path) -> None:
    data = config().model_dump(mode="json")
    first_engine = data["models"][0]["groups"][0]["replicas"][0]["port"]
    data["safety_filter"] = {**data["safety_filter"], "port": first_engine - 10, "processes": 11}
    with pytest.raises(ValueError) as caught:
        plan_stack(FrugalConfig.model_validate(data), tmp_path / "f.yaml", StackFiles(tmp_path))
    message = str(caught.value)
    assert message.startswith(f"port {first_engine} is taken twice:")
    assert "safety_filter.port (process 10)" in message and "models.alpha.groups.g1" in message


def test_an_engine_metrics_port_counts_as_taken(tmp_path: Path) -> None:
    data = config().model_dump(mode="json")
    engine = data["models"][0]["groups"][0]["replicas"][0]["port"]
    data["admin"] = {**data.get("admin", {}), "port": engine_metrics_port(engine)}
    with pytest.raises(ValueError, match=r"admin.port and by models.alpha.groups.g1.*\(metrics\)"):
        plan_stack(FrugalConfig.model_validate(data), tmp_path / "f.yaml", StackFiles(tmp_path))


def test_the_repositorys_config_takes_each_port_once(tmp_path: Path) -> None:
    repo_config = load_config(REPO_ROOT / "frugal.yaml")
    plan_stack(repo_config, tmp_path / "f.yaml", StackFiles(tmp_path))
