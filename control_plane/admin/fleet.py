"""Admin REST: models, replica groups and replicas, and the balancer's live state.

Edge layer over control_plane.fleet (changes, persisted in Redis, out over EDS/RDS
within a second) and the balancer loop (what it saw and decided).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from control_plane.admin.errors import AdminError
from control_plane.balancer.config import BalancerConfig
from control_plane.balancer_loop import BalancerLoop
from control_plane.fleet import Fleet, FleetNotFoundError
from control_plane.fleet_changes import FleetChangeError
from control_plane.load_sampler import HostState
from control_plane.model import FrugalConfig, engine_cluster_name


class ReplicaRequest(BaseModel):
    address: str = Field(pattern=r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$", description="host:port")


class WeightRequest(BaseModel):
    weight: int = Field(ge=0, le=1000)


def _not_found(error: LookupError) -> AdminError:
    return AdminError(404, "invalid_request_error", "not_found", str(error))


def _invalid(error: FleetChangeError) -> AdminError:
    field = str(error).split(":", 1)[0]
    return AdminError(422, "invalid_request_error", "invalid_value", str(error), field)


def fleet_view(config: FrugalConfig, loop: BalancerLoop) -> dict[str, Any]:
    models = []
    for model in config.models:
        balance = loop.models.get(model.name)
        groups = []
        for group in model.groups:
            hosts = loop.hosts.get(engine_cluster_name(model.name, group.name), {})
            replicas = [
                {
                    "address": str(e),
                    "draining": e.draining,
                    "healthy": hosts.get(str(e), HostState(False, False, 0)).healthy,
                    "in_flight": hosts.get(str(e), HostState(False, False, 0)).active,
                }
                for e in group.replicas
            ]
            published = (balance.published or {}) if balance else {}
            groups.append(
                {
                    "name": group.name,
                    "profile": group.profile,
                    "static_weight": group.weight,
                    "weight": published.get(group.name, group.weight),
                    "replicas": replicas,
                    "discover": None if group.discover is None else group.discover.model_dump(),
                }
            )
        models.append(
            {"name": model.name, "balancer": model.balancer.model_dump(), "groups": groups}
        )
    return {"object": "list", "data": models}


def balancer_view(loop: BalancerLoop) -> dict[str, Any]:
    data = []
    for name, balance in loop.models.items():
        load = balance.load
        data.append(
            {
                "model": name,
                "weights": balance.published,
                "proposed": dict(balance.decision.weights) if balance.decision else None,
                "reason": balance.decision.reason if balance.decision else None,
                "load": [
                    {
                        "group": g.group,
                        "replicas": g.replicas,
                        "in_flight": g.in_flight,
                        "running": g.running,
                    }
                    for g in (load.groups if load else ())
                ],
            }
        )
    return {"object": "list", "data": data}


async def change(action: Awaitable[object]) -> None:
    """Run a fleet change; its refusals become admin errors (404, 422 naming the field)."""
    try:
        await action
    except FleetNotFoundError as error:
        raise _not_found(error) from error
    except FleetChangeError as error:
        raise _invalid(error) from error


def fleet_router(fleet: Fleet, loop: BalancerLoop) -> APIRouter:
    router = APIRouter(prefix="/admin/v1", tags=["fleet"])

    @router.get("/models")
    async def list_models() -> dict[str, Any]:
        return fleet_view(fleet.desired, loop)

    @router.get("/balancer")
    async def balancer_state() -> dict[str, Any]:
        return balancer_view(loop)

    base = "/models/{model}/groups/{group}"

    @router.post(base + "/replicas", status_code=201)
    async def register_replica(model: str, group: str, body: ReplicaRequest) -> dict[str, Any]:
        await change(fleet.add_replica(model, group, body.address))
        return fleet_view(fleet.desired, loop)

    @router.post(base + "/replicas/{address}/drain", status_code=202)
    async def drain_replica(model: str, group: str, address: str) -> dict[str, Any]:
        await change(fleet.drain_replica(model, group, address))
        return fleet_view(fleet.desired, loop)

    @router.delete(base + "/replicas/{address}", status_code=204)
    async def remove_replica(model: str, group: str, address: str) -> Response:
        await change(fleet.remove_replica(model, group, address))
        return Response(status_code=204)

    @router.patch(base)
    async def set_weight(model: str, group: str, body: WeightRequest) -> dict[str, Any]:
        await change(fleet.set_weight(model, group, body.weight))
        return fleet_view(fleet.desired, loop)

    @router.put("/models/{model}/balancer")
    async def set_balancer(model: str, body: BalancerConfig) -> dict[str, Any]:
        await change(fleet.set_balancer(model, body))
        return fleet_view(fleet.desired, loop)

    return router
