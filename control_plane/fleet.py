"""The fleet as it is now: frugal.yaml, the replicas found by DNS, and run-time changes
persisted in Redis.

I/O layer around the pure fleet_changes: every change (register, drain, remove a
replica; set a group's weight or a model's balancer policy) is validated by
building the whole desired state, published as a new snapshot (Envoy has it
within a second), then persisted, so it survives a control-plane restart and every
control-plane replica takes it (`sync`, each balancer tick; a change starts from the
latest persisted state, so replicas only race within one Redis round trip). Replicas
found by DNS (dns_resolver.py) are laid over frugal.yaml before the changes, so a
discovered replica can be drained or removed like a configured one.
"""

from __future__ import annotations

import asyncio
import logging

from control_plane.balancer.config import BalancerConfig
from control_plane.fleet_changes import FleetChanges, apply_changes, group_key
from control_plane.model import Endpoint, FrugalConfig
from control_plane.replica_discovery import with_discovered
from control_plane.server import ControlPlane
from frugal.redis_connection import RedisClient

log = logging.getLogger(__name__)

CHANGES_KEY = "frugal:cp:fleet-changes"


class FleetNotFoundError(LookupError):
    """No such model, group or replica."""


class Fleet:
    def __init__(self, base: FrugalConfig, redis: RedisClient, control_plane: ControlPlane) -> None:
        self._base = base
        self._redis = redis
        self._control_plane = control_plane
        self._changes = FleetChanges()
        self._discovered: dict[str, tuple[Endpoint, ...]] = {}
        self._lock = asyncio.Lock()

    @property
    def base(self) -> FrugalConfig:
        """frugal.yaml, as the control plane read it."""
        return self._base

    @property
    def desired(self) -> FrugalConfig:
        return self._control_plane.config

    def _found(self) -> FrugalConfig:
        return with_discovered(self._base, self._discovered)

    async def restore(self) -> None:
        """Lay the persisted changes over frugal.yaml (a change that no longer fits the
        file, e.g. its model was removed, is dropped with a warning)."""
        async with self._lock:
            await self._take_persisted()

    async def sync(self) -> None:
        """Take the changes another control-plane replica persisted (its admin REST, or
        its drains), so that every replica serves the same fleet."""
        async with self._lock:
            await self._take_persisted()

    async def _take_persisted(self) -> None:
        raw = await self._redis.get(CHANGES_KEY)
        if raw is None:
            return
        changes = FleetChanges.model_validate_json(raw)
        if changes == self._changes:
            return
        try:
            desired = apply_changes(self._found(), changes)
        except ValueError as error:
            log.warning("dropping persisted fleet changes that no longer apply: %s", error)
            return
        self._changes = changes
        self._control_plane.publish(desired)

    def _check_group(self, model: str, group: str) -> str:
        found = self.desired.model(model)
        if found is None:
            raise FleetNotFoundError(f"no model {model!r}")
        if group not in {g.name for g in found.groups}:
            raise FleetNotFoundError(f"model {model!r} has no group {group!r}")
        return group_key(model, group)

    def replicas(self, model: str, group: str) -> tuple[Endpoint, ...]:
        self._check_group(model, group)
        found = self.desired.model(model)
        assert found is not None
        return next(g.replicas for g in found.groups if g.name == group)

    async def set_discovered(self, key: str, endpoints: tuple[Endpoint, ...]) -> bool:
        """What a group's DNS name resolves to now; publish if that changed anything."""
        async with self._lock:
            if self._discovered.get(key, ()) == endpoints:
                return False
            discovered = {**self._discovered, key: endpoints}
            desired = apply_changes(with_discovered(self._base, discovered), self._changes)
            self._discovered = discovered
            self._control_plane.publish(desired)
            return True

    async def _change(self, changes: FleetChanges) -> FrugalConfig:
        desired = apply_changes(self._found(), changes)  # raises FleetChangeError (422)
        self._control_plane.publish(desired)
        await self._redis.set(CHANGES_KEY, changes.model_dump_json())
        self._changes = changes
        return desired

    async def add_replica(self, model: str, group: str, address: str) -> FrugalConfig:
        async with self._lock:
            await self._take_persisted()
            key = self._check_group(model, group)
            return await self._change(self._changes.with_replica(key, address))

    async def drain_replica(self, model: str, group: str, address: str) -> FrugalConfig:
        async with self._lock:
            await self._take_persisted()
            key = self._require_replica(model, group, address)
            return await self._change(self._changes.draining_replica(key, address))

    async def remove_replica(self, model: str, group: str, address: str) -> FrugalConfig:
        async with self._lock:
            await self._take_persisted()
            key = self._require_replica(model, group, address)
            return await self._change(self._changes.without_replica(key, address))

    async def set_weight(self, model: str, group: str, weight: int) -> FrugalConfig:
        async with self._lock:
            await self._take_persisted()
            key = self._check_group(model, group)
            return await self._change(self._changes.with_weight(key, weight))

    async def set_balancer(self, model: str, balancer: BalancerConfig) -> FrugalConfig:
        async with self._lock:
            await self._take_persisted()
            if self.desired.model(model) is None:
                raise FleetNotFoundError(f"no model {model!r}")
            return await self._change(self._changes.with_balancer(model, balancer))

    def _require_replica(self, model: str, group: str, address: str) -> str:
        key = self._check_group(model, group)
        if address not in {str(e) for e in self.replicas(model, group)}:
            raise FleetNotFoundError(f"group {key} has no replica {address}")
        return key
