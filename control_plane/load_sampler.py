"""Reading live load: Envoy's in-flight requests per cluster and host, the engines' counters.

I/O layer (httpx). Envoy: `/stats?format=json` filtered to `upstream_rq_active` of
the engine clusters (1-3 ms, ENVOY_NOTES) and `/clusters?format=json` for each
host's health, active requests and request / error counters, summed over every
Envoy the control plane serves (and over a prefix-routed group's two clusters, counted
under the group's cluster). Engines: their Prometheus endpoint (replica port +
1000), for running / waiting sequences and the generated-token counter the adaptive
policy learns from, read with prometheus_client's parser. A source that does not answer,
or answers with something else than metrics, is skipped for that tick, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from control_plane.balancer.load import (
    DecodeCounters,
    PrefillCounters,
    ReplicaCounters,
    RequestCounters,
)
from control_plane.model import ENGINE_CLUSTER_PREFIX, UNKEYED_CLUSTER_PREFIX, group_cluster_of
from frugal.wire import engine_metrics_port

ACTIVE_STAT = re.compile(r"^cluster\.(engine(?:_unkeyed)?__.+)\.upstream_rq_active$")
ENGINE_METRIC_PREFIX = "frugal_engine_"


@dataclass(frozen=True)
class HostState:
    healthy: bool
    draining: bool
    active: int
    # Cumulative, as this Envoy counted them: requests sent to the host, and those that
    # failed (5xx answers and gRPC error statuses; traffic_rates says why these counters).
    requests: int = 0
    errors: int = 0


def engine_samples(text: str) -> dict[str, float]:
    """An engine's Prometheus text: each `frugal_engine_` sample's value by sample name,
    summed over its labels. Raises ValueError for text that is not Prometheus's format."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(ENGINE_METRIC_PREFIX):
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def replica_counters(values: Mapping[str, float], at: float) -> ReplicaCounters | None:
    """One engine's reading from its samples (`engine_samples`); None when it has no
    generated-token counter (not an engine). Its decode-step and prefill-step tallies and
    request counters when it keeps them."""
    if "frugal_engine_generation_tokens_total" not in values:
        return None
    return ReplicaCounters(
        at=at,
        running=values.get("frugal_engine_num_requests_running", 0.0),
        tokens_total=values["frugal_engine_generation_tokens_total"],
        decode=_decode(values),
        prefill=_prefill(values),
        requests=_requests(values),
    )


def _decode(values: Mapping[str, float]) -> DecodeCounters | None:
    steps = values.get("frugal_engine_decode_steps_total")
    if steps is None:
        return None
    return DecodeCounters(
        steps=steps,
        seconds=values.get("frugal_engine_decode_step_seconds_total", 0.0),
        sequences=values.get("frugal_engine_decode_step_sequences_total", 0.0),
    )


def _prefill(values: Mapping[str, float]) -> PrefillCounters | None:
    steps = values.get("frugal_engine_prefill_steps_total")
    if steps is None:
        return None
    return PrefillCounters(
        steps=steps,
        seconds=values.get("frugal_engine_prefill_step_seconds_total", 0.0),
        sequences=values.get("frugal_engine_prefill_step_sequences_total", 0.0),
        tokens=values.get("frugal_engine_prefill_step_tokens_total", 0.0),
    )


def _requests(values: Mapping[str, float]) -> RequestCounters | None:
    finished = values.get("frugal_engine_request_generation_tokens_count")
    if finished is None:
        return None
    return RequestCounters(
        finished=finished,
        finished_tokens=values.get("frugal_engine_request_generation_tokens_sum", 0.0),
        finished_prompt_tokens=values.get("frugal_engine_request_prompt_tokens_sum", 0.0),
    )


def _address(host: dict[str, Any]) -> str:
    socket = host.get("address", {}).get("socket_address", {})
    return f"{socket.get('address')}:{socket.get('port_value')}"


def _host_state(host: dict[str, Any]) -> HostState:
    health = host.get("health_status") or {}
    eds = str(health.get("eds_health_status", "HEALTHY"))
    failed = any(
        bool(health.get(flag))
        for flag in ("failed_active_health_check", "failed_outlier_check", "pending_active_hc")
    )
    stats = {s.get("name"): s.get("value") for s in host.get("stats", [])}
    return HostState(
        healthy=eds == "HEALTHY" and not failed,
        draining=eds == "DRAINING",
        active=int(stats.get("rq_active") or 0),
        requests=int(stats.get("rq_total") or 0),
        errors=int(stats.get("rq_error") or 0),
    )


def merged(first: HostState, second: HostState) -> HostState:
    """One host as a group's two clusters see it (a prefix-routed group's hashed and
    least-request clusters): serving while both find it healthy, its requests summed."""
    return HostState(
        healthy=first.healthy and second.healthy,
        draining=first.draining or second.draining,
        active=first.active + second.active,
        requests=first.requests + second.requests,
        errors=first.errors + second.errors,
    )


def engine_cluster_hosts(statuses: Iterable[dict[str, Any]]) -> dict[str, dict[str, HostState]]:
    """Envoy's `/clusters?format=json` cluster statuses -> group cluster -> host -> state,
    for the engine clusters; a group's second cluster is counted under its first
    (model.group_cluster_of)."""
    groups: dict[str, dict[str, HostState]] = {}
    for cluster in statuses:
        name = str(cluster.get("name", ""))
        if not name.startswith((ENGINE_CLUSTER_PREFIX, UNKEYED_CLUSTER_PREFIX)):
            continue
        hosts = groups.setdefault(group_cluster_of(name), {})
        for host in cluster.get("host_statuses", []):
            address, state = _address(host), _host_state(host)
            seen = hosts.get(address)
            hosts[address] = state if seen is None else merged(seen, state)
    return groups


class LoadSampler:
    def __init__(self, envoy_admin_urls: Iterable[str], timeout_s: float = 0.2) -> None:
        self._envoys = list(envoy_admin_urls)
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def in_flight(self) -> dict[str, float]:
        """Group cluster name -> requests active, summed over every Envoy and over a
        prefix-routed group's two clusters."""
        totals: dict[str, float] = {}
        for url in self._envoys:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = await self._client.get(
                    url + "/stats", params={"format": "json", "filter": ACTIVE_STAT.pattern}
                )
                for stat in response.json().get("stats", []):
                    match = ACTIVE_STAT.match(str(stat.get("name", "")))
                    if match:
                        cluster = group_cluster_of(match.group(1))
                        totals[cluster] = totals.get(cluster, 0.0) + float(stat["value"])
        return totals

    async def hosts(self) -> dict[str, dict[str, HostState]]:
        """Cluster name -> host address -> state (first Envoy that answers)."""
        return next(iter((await self.hosts_by_envoy()).values()), {})

    async def hosts_by_envoy(self) -> dict[str, dict[str, dict[str, HostState]]]:
        """Envoy admin URL -> cluster name -> host address -> state, for every Envoy that
        answers, in the configured order."""
        answers = await asyncio.gather(*(self._clusters(url) for url in self._envoys))
        return {
            url: clusters
            for url, clusters in zip(self._envoys, answers, strict=True)
            if clusters is not None
        }

    async def _clusters(self, url: str) -> dict[str, dict[str, HostState]] | None:
        try:
            response = await self._client.get(url + "/clusters", params={"format": "json"})
            statuses = response.json().get("cluster_statuses", [])
        except (httpx.HTTPError, ValueError):
            return None
        return engine_cluster_hosts(statuses)

    async def engine_counters(self, addresses: Iterable[str]) -> dict[str, ReplicaCounters]:
        """Replica address -> its running sequences and generated-token total, now."""
        addresses = list(addresses)
        results = await asyncio.gather(*(self._counters(a) for a in addresses))
        return {a: c for a, c in zip(addresses, results, strict=True) if c is not None}

    async def _counters(self, address: str) -> ReplicaCounters | None:
        host, _, port = address.rpartition(":")
        url = f"http://{host}:{engine_metrics_port(int(port))}/metrics"
        try:
            text = (await self._client.get(url)).text
        except httpx.HTTPError:
            return None
        try:
            values = engine_samples(text)
        except ValueError:
            return None
        return replica_counters(values, time.monotonic())

    async def close(self) -> None:
        await self._client.aclose()
