"""Resolving the DNS names of replica groups on a timer (I/O layer, asyncio).

Each group that names a DNS name (`discover` in frugal.yaml) is resolved every
`interval_s` with the system resolver, which is what compose's embedded DNS and
Kubernetes' cluster DNS answer; when the set of addresses changes, the fleet publishes
a new snapshot and Envoy has the new endpoints over EDS. A failed lookup keeps the last
answer: a resolver that is briefly away must not empty a group, and a replica that is
really gone fails Envoy's health checks within a second anyway.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable

from control_plane.fleet import Fleet
from control_plane.fleet_changes import FleetChangeError
from control_plane.model import DnsDiscovery, Endpoint
from control_plane.replica_discovery import discovery_targets, endpoints_of

log = logging.getLogger(__name__)

# (name, port) -> the addresses the name resolves to
Resolve = Callable[[str, int], Awaitable[Iterable[str]]]


async def system_resolve(name: str, port: int) -> list[str]:
    """The addresses of `name` from the system resolver (getaddrinfo, TCP)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


class ReplicaResolver:
    """Keeps the fleet's discovered replicas in step with DNS."""

    def __init__(self, fleet: Fleet, resolve: Resolve = system_resolve) -> None:
        self._fleet = fleet
        self._resolve = resolve
        self._targets = discovery_targets(fleet.base)

    @property
    def enabled(self) -> bool:
        return bool(self._targets)

    async def run(self) -> None:
        """Resolve each group at once, then every `interval_s`, until cancelled."""
        await asyncio.gather(*(self._every(key, t) for key, t in self._targets.items()))

    async def _every(self, key: str, target: DnsDiscovery) -> None:
        while True:
            await self._refresh(key, target)
            await asyncio.sleep(target.interval_s)

    async def _refresh(self, key: str, target: DnsDiscovery) -> None:
        try:
            addresses = await self._resolve(target.dns, target.port)
        except OSError as error:  # socket.gaierror: no such name, resolver unreachable
            log.warning(
                "replicas of %s: cannot resolve %s (%s); keeping the last answer",
                key,
                target.dns,
                error,
            )
            return
        found: tuple[Endpoint, ...] = endpoints_of(addresses, target.port)
        try:
            changed = await self._fleet.set_discovered(key, found)
        except FleetChangeError as error:  # e.g. an address that is another group's replica
            log.warning("replicas of %s from %s refused: %s", key, target.dns, error)
            return
        if changed:
            names = ", ".join(map(str, found)) or "none"
            log.info("replicas of %s from %s: %s", key, target.dns, names)
