"""`load_config`: frugal.yaml -> FrugalConfig, and the refusal of bad files by field name."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from control_plane.config_file import ConfigError, load_config
from control_plane.model import Endpoint, FrugalConfig
from frugal.cli.up import check_profiles

REPO_ROOT = Path(__file__).resolve().parents[2]

BASE: dict[str, Any] = {
    "listener": {"port": 18080},
    "profiles": {"small": {"a_ms": 1.0}, "large": {"a_ms": 2.0}},
    "models": [
        {
            "name": "alpha",
            "groups": [
                {"name": "g1", "profile": "small", "weight": 3, "replicas": ["127.0.0.1:7001"]},
                {"name": "g2", "profile": "large", "replicas": ["127.0.0.1:7002"]},
            ],
        },
        {
            "name": "beta",
            "echo": True,
            "groups": [{"name": "e", "profile": "small", "replicas": ["127.0.0.1:7003"]}],
        },
    ],
}


def base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "frugal.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    return message


def test_the_repositorys_own_config_loads() -> None:
    config = load_config(REPO_ROOT / "frugal.yaml")
    assert [m.name for m in config.models] == ["smollm2-135m-instruct", "sim-mixtral", "sim-echo"]
    real = config.model("smollm2-135m-instruct")
    assert real is not None and real.backend == "transformers"
    check_profiles(config)
    mixtral = config.model("sim-mixtral")
    assert mixtral is not None
    assert [(g.name, len(g.replicas)) for g in mixtral.groups] == [("tp8", 1), ("tp2", 4)]
    assert mixtral.echo is False
    echo = config.model("sim-echo")
    assert echo is not None
    assert echo.echo is True
    assert config.model("nope") is None


def test_a_valid_file_gives_the_configured_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, base()))
    assert isinstance(config, FrugalConfig)
    assert config.listener.port == 18080
    assert config.listener.max_request_bytes == 1 << 20  # default
    alpha = config.model("alpha")
    assert alpha is not None
    assert [g.weight for g in alpha.groups] == [3, 1]
    assert alpha.groups[0].replicas == (Endpoint(host="127.0.0.1", port=7001),)


def test_a_replica_without_host_means_loopback() -> None:
    assert Endpoint.parse("7001") == Endpoint(host="127.0.0.1", port=7001)
    assert Endpoint.parse("engine-0:7001") == Endpoint(host="engine-0", port=7001)
    assert str(Endpoint.parse("10.0.0.2:80")) == "10.0.0.2:80"


def test_an_unknown_profile_names_the_group(tmp_path: Path) -> None:
    data = base()
    data["models"][0]["groups"][1]["profile"] = "huge"
    message = refusal(write(tmp_path, data))
    assert "models.alpha.groups.g2.profile" in message
    assert "'huge'" in message


def test_a_replica_in_two_groups_is_refused(tmp_path: Path) -> None:
    data = base()
    data["models"][1]["groups"][0]["replicas"] = ["127.0.0.1:7001"]
    message = refusal(write(tmp_path, data))
    assert "models.beta.groups.e.replicas" in message
    assert "127.0.0.1:7001 is already a replica of alpha/g1" in message


def test_duplicate_model_names_are_refused(tmp_path: Path) -> None:
    data = base()
    data["models"][1]["name"] = "alpha"
    message = refusal(write(tmp_path, data))
    assert "duplicate model name" in message


def test_names_that_give_the_same_envoy_cluster_are_refused(tmp_path: Path) -> None:
    data = base()
    group = data["models"][0]["groups"][0]["name"]
    data["models"][0]["name"] = "m.1"
    data["models"][1]["name"] = "m_1"
    data["models"][1]["groups"][0]["name"] = group
    message = refusal(write(tmp_path, data))
    assert f"models.m_1.groups.{group}.name" in message
    assert "engine__m_1__" in message


def test_duplicate_group_names_are_refused(tmp_path: Path) -> None:
    data = base()
    data["models"][0]["groups"][1]["name"] = "g1"
    message = refusal(write(tmp_path, data))
    assert "models.0" in message
    assert "duplicate group name in model 'alpha'" in message


def test_weights_adding_up_to_zero_are_refused(tmp_path: Path) -> None:
    data = base()
    for group in data["models"][0]["groups"]:
        group["weight"] = 0
    message = refusal(write(tmp_path, data))
    assert "the weights of model 'alpha' add up to 0" in message


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("listener", "port", 0),
        ("listener", "port", 70000),
        ("control_plane", "xds_port", -1),
        ("safety_filter", "port", "http"),
        ("envoy", "admin_port", 65536),
    ],
)
def test_a_bad_port_names_its_field(
    tmp_path: Path, section: str, field: str, value: object
) -> None:
    data = base()
    data[section] = {field: value}
    message = refusal(write(tmp_path, data))
    assert f"{section}.{field}:" in message


def test_a_bad_replica_port_names_the_replicas(tmp_path: Path) -> None:
    data = base()
    data["models"][0]["groups"][0]["replicas"] = ["127.0.0.1:70000"]
    message = refusal(write(tmp_path, data))
    assert "models.0.groups.0.replicas" in message


def test_an_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    data = base()
    data["listners"] = {"port": 1}
    message = refusal(write(tmp_path, data))
    assert "listners: Extra inputs are not permitted" in message


def test_an_unknown_nested_key_is_refused(tmp_path: Path) -> None:
    data = base()
    data["models"][0]["groups"][0]["weigth"] = 2
    message = refusal(write(tmp_path, data))
    assert "models.0.groups.0.weigth: Extra inputs are not permitted" in message


def test_no_models_is_refused(tmp_path: Path) -> None:
    data = base()
    data["models"] = []
    message = refusal(write(tmp_path, data))
    assert "models:" in message


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "frugal.yaml"
    path.write_text("models: [\n  - name: x\n")
    message = refusal(path)
    assert "not valid YAML" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_a_top_level_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "frugal.yaml"
    path.write_text(text)
    message = refusal(path)
    assert "expected a mapping at the top level" in message


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path / "absent.yaml")
    assert "cannot read" in message
