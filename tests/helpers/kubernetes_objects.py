"""Reading rendered Kubernetes objects (test support, pure): finding objects, their
containers, environment and ports, label selectors, and which connections NetworkPolicies
admit (Kubernetes' rules for Ingress policies); and a minimal schema of the ServiceMonitor
CRD, which the Kubernetes schemas lack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Obj = dict[str, Any]

WORKLOADS = ("Deployment", "StatefulSet")
NAMESPACE_LABELS = {"kubernetes.io/metadata.name": "frugal"}

# A minimal schema of what the ServiceMonitors use (monitoring.coreos.com/v1); unknown
# fields are refused, as the strict Kubernetes schemas refuse them.
RELABELING = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "regex": {"type": "string"},
        "targetLabel": {"type": "string"},
        "replacement": {"type": "string"},
    },
    "required": ["targetLabel"],
}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": {"type": "object"}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m)$"},
                            "relabelings": {"type": "array", "items": RELABELING},
                            "metricRelabelings": {"type": "array", "items": RELABELING},
                        },
                    },
                },
            },
        },
    },
}


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def generated(objects: list[Obj], kind: str, prefix: str) -> Obj:
    """A ConfigMap or Secret of a kustomize generator (its name ends in a content hash)."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"{len(found)} {kind} named {prefix}*"
    return found[0]


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for workload in workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        assert "initContainers" not in pod, "init containers are not checked here"
        for one in pod["containers"]:
            yield workload, one


def container(workload: Obj) -> Obj:
    """The workload's one main container."""
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(container: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def ports_of(workload: Obj) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(workload).get("ports", [])}


def pod_labels(workload: Obj) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        held = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }
        if not held[operator]:
            return False
    return True


def mounted_file(workload: Obj, volume_kind: str, prefix: str, key: str) -> str:
    """Where the container sees `key` of the ConfigMap or Secret named `prefix`*."""
    name_field = {"configMap": "name", "secret": "secretName"}[volume_kind]
    for volume in workload["spec"]["template"]["spec"]["volumes"]:
        source = volume.get(volume_kind)
        if source and source[name_field].startswith(prefix):
            (mount,) = [
                m for m in container(workload)["volumeMounts"] if m["name"] == volume["name"]
            ]
            return f"{mount['mountPath']}/{key}"
    raise AssertionError(f"{workload['metadata']['name']} mounts no {volume_kind} {prefix}")


def peer_admits(peer: Obj, labels: dict[str, str], namespace: dict[str, str]) -> bool:
    """One `from` entry of a NetworkPolicy (in namespace `frugal`) against a source pod."""
    assert "ipBlock" not in peer, "ipBlock peers are not modelled here"
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], namespace)
    else:
        in_namespace = namespace == NAMESPACE_LABELS
    return in_namespace and selects(peer.get("podSelector", {}), labels)


def admitted(
    policies: list[Obj], source: tuple[dict[str, str], dict[str, str]], target: Obj, port: str
) -> bool:
    """Whether the NetworkPolicies let `source` (labels, namespace labels) reach `target`'s
    container port named `port`: Kubernetes' rules (a pod that no Ingress policy selects
    takes anything; otherwise the union of the rules of those that select it)."""
    number = ports_of(target)[port]
    labels = pod_labels(target)
    isolating = [
        p for p in policies
        if "Ingress" in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], labels)
    ]  # fmt: skip
    if not isolating:
        return True
    for policy in isolating:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(p["port"] in (port, number) for p in ports):
                continue
            peers = rule.get("from")
            if not peers or any(peer_admits(peer, *source) for peer in peers):
                return True
    return False
