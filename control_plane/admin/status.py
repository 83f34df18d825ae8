"""Admin REST: `GET /admin/v1/status`, the gateway on one screen (what `frugal status` shows).

Edge layer. Reads what the control plane already holds, never Envoy itself: the
desired state, the ADS streams and snapshot generation (server), and the balancer
loop's latest samples: published weights, replica health, in-flight requests per
group, and request / error rates from its traffic window (traffic_rates).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from control_plane.balancer_loop import BalancerLoop
from control_plane.load_sampler import HostState
from control_plane.model import Model, ReplicaGroup, engine_cluster_name
from control_plane.server import ControlPlane
from control_plane.traffic_rates import TrafficRate


class Traffic(BaseModel):
    """Live load of a group, a model or the whole gateway."""

    in_flight: float = Field(description="requests under way in Envoy, summed over Envoys")
    requests_per_s: float | None = Field(
        description="requests sent to replicas per second over the window; null until known"
    )
    errors_per_s: float | None = Field(
        description="of those, failed per second (5xx answers and gRPC error statuses)"
    )
    error_share: float | None = Field(
        description="errors / requests over the window (0..1); null without requests"
    )


class GroupStatus(Traffic):
    name: str
    weight: int = Field(description="the route weight Envoy has now (published by the balancer)")
    static_weight: int = Field(description="the configured weight")
    replicas_healthy: int = Field(description="not draining and passing Envoy's health checks")
    replicas_draining: int
    replicas_total: int


class ModelStatus(Traffic):
    name: str
    policy: str = Field(description="the balancer policy type")
    groups: list[GroupStatus]


class StatusTotals(Traffic):
    models: int
    groups: int


class GatewayStatus(BaseModel):
    object: Literal["status"] = "status"
    envoy_connected: bool = Field(description="at least one Envoy holds an ADS stream open")
    envoy_streams: int = Field(description="ADS streams open now")
    config_generation: int = Field(description="snapshots published since the start, +1 each")
    balancer_leader: bool = Field(
        description="this control-plane replica decides the route weights (the others serve "
        "the weights it decided)"
    )
    window_s: float = Field(description="the window rates are measured over")
    stats_age_s: float | None = Field(
        description="seconds since Envoy's counters were last read; null if never"
    )
    totals: StatusTotals
    models: list[ModelStatus]


def _traffic(in_flight: float, rates: Iterable[tuple[float, float] | None]) -> Traffic:
    """Traffic from (requests/s, errors/s) of its parts; rates stay null if none is known."""
    known = [rate for rate in rates if rate is not None]
    if not known:
        return Traffic(in_flight=in_flight, requests_per_s=None, errors_per_s=None,
                       error_share=None)  # fmt: skip
    requests = sum(r for r, _ in known)
    errors = sum(e for _, e in known)
    return Traffic(
        in_flight=in_flight,
        requests_per_s=requests,
        errors_per_s=errors,
        error_share=min(1.0, errors / requests) if requests > 0 else None,
    )


def _pair(rate: TrafficRate | None) -> tuple[float, float] | None:
    return None if rate is None else (rate.requests_per_s, rate.errors_per_s)


def _group_status(model: Model, group: ReplicaGroup, loop: BalancerLoop) -> GroupStatus:
    cluster = engine_cluster_name(model.name, group.name)
    hosts = loop.hosts.get(cluster, {})
    unseen = HostState(healthy=False, draining=False, active=0)
    balance = loop.models.get(model.name)
    published = (balance.published if balance else None) or {}
    loads = {g.group: g for g in (balance.load.groups if balance and balance.load else ())}
    load = loads.get(group.name)
    traffic = _traffic(load.in_flight if load else 0.0, [_pair(loop.traffic.rate(cluster))])
    return GroupStatus(
        **traffic.model_dump(),
        name=group.name,
        weight=published.get(group.name, group.weight),
        static_weight=group.weight,
        replicas_healthy=sum(
            1 for e in group.replicas if not e.draining and hosts.get(str(e), unseen).healthy
        ),
        replicas_draining=sum(1 for e in group.replicas if e.draining),
        replicas_total=len(group.replicas),
    )


def _summed(parts: list[GroupStatus] | list[ModelStatus]) -> Traffic:
    """Traffic of a whole from its parts' (rates per second add up)."""
    rates = [
        None if p.requests_per_s is None else (p.requests_per_s, p.errors_per_s or 0.0)
        for p in parts
    ]
    return _traffic(sum(p.in_flight for p in parts), rates)


def gateway_status(control_plane: ControlPlane, loop: BalancerLoop, now: float) -> GatewayStatus:
    """The status at `now` (the balancer loop's clock: the event loop's monotonic time)."""
    models = []
    for model in control_plane.config.models:
        groups = [_group_status(model, group, loop) for group in model.groups]
        models.append(
            ModelStatus(
                **_summed(groups).model_dump(),
                name=model.name,
                policy=model.balancer.type,
                groups=groups,
            )
        )
    observed = loop.traffic.last_observed
    streams = control_plane.ads.open_streams
    return GatewayStatus(
        envoy_connected=streams > 0,
        envoy_streams=streams,
        config_generation=control_plane.cache.generation,
        balancer_leader=loop.leading,
        window_s=loop.traffic.window_s,
        stats_age_s=None if observed is None else max(0.0, now - observed),
        totals=StatusTotals(
            **_summed(models).model_dump(),
            models=len(models),
            groups=sum(len(m.groups) for m in models),
        ),
        models=models,
    )


def status_router(control_plane: ControlPlane, loop: BalancerLoop) -> APIRouter:
    router = APIRouter(prefix="/admin/v1", tags=["status"])

    @router.get("/status", response_model=GatewayStatus)
    async def get_status() -> GatewayStatus:
        return gateway_status(control_plane, loop, asyncio.get_running_loop().time())

    return router
