"""Incremental (delta) xDS protocol state for one ADS stream.

Layer: control plane, xDS protocol core (pure; no I/O, no asyncio). Per type URL the stream
remembers what the client subscribed to and which version of each resource it holds (content
hashes from the snapshot). After every request and every new snapshot it sends only resources
whose version differs and names the ones that disappeared in `removed_resources`. A reconnecting
Envoy reports what it holds in `initial_resource_versions`, so an unchanged config costs an empty
response. Subscription changes apply whatever the nonce; a NACK is counted and logged and the
refused versions are not resent (Envoy keeps its last good config).
See https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#incremental-xds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from control_plane.xds.resources import EXPLICIT_WILDCARD, WILDCARD_TYPES, push_rank
from control_plane.xds.snapshot import Snapshot
from control_plane.xds.stats import XdsStats

logger = logging.getLogger(__name__)


@dataclass
class _DeltaSubscription:
    wildcard: bool
    names: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)  # name -> version the client has
    last_nonce: str | None = None
    last_version: str | None = None  # system_version_info of the last response
    answered: bool = False  # the first request of a type always gets a response

    def in_scope(self, name: str) -> bool:
        return self.wildcard or name in self.names


class DeltaStream:
    """The protocol state of one delta ADS stream."""

    def __init__(self, stream_id: str, stats: XdsStats, nonces: Iterator[str]) -> None:
        self.stream_id = stream_id
        self.node_id = ""
        self._stats = stats
        self._nonces = nonces
        self._subscriptions: dict[str, _DeltaSubscription] = {}

    def on_request(
        self, request: discovery_pb2.DeltaDiscoveryRequest, snapshot: Snapshot | None
    ) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        if request.HasField("node") and request.node.id:
            self.node_id = request.node.id
        type_url = request.type_url
        if not type_url:
            logger.warning("stream %s (%s): request without type_url", self.stream_id, self.node_id)
            return []
        subscription = self._subscriptions.get(type_url)
        if subscription is None:
            subscription = self._subscribe(request)
        else:
            self._acknowledge(request, subscription)
        subscription.names.update(request.resource_names_subscribe)
        if EXPLICIT_WILDCARD in subscription.names:
            subscription.names.discard(EXPLICIT_WILDCARD)
            subscription.wildcard = True
        for name in request.resource_names_unsubscribe:
            if name == EXPLICIT_WILDCARD:
                subscription.wildcard = False
            subscription.names.discard(name)
            subscription.held.pop(name, None)
        return self._respond(type_url, subscription, snapshot)

    def on_snapshot(self, snapshot: Snapshot) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        responses: list[discovery_pb2.DeltaDiscoveryResponse] = []
        for type_url in sorted(self._subscriptions, key=push_rank):
            responses.extend(self._respond(type_url, self._subscriptions[type_url], snapshot))
        return responses

    def _subscribe(self, request: discovery_pb2.DeltaDiscoveryRequest) -> _DeltaSubscription:
        # Legacy wildcard: the first LDS/CDS request naming nothing asks for everything.
        wildcard = request.type_url in WILDCARD_TYPES and not request.resource_names_subscribe
        subscription = _DeltaSubscription(
            wildcard=wildcard, held=dict(request.initial_resource_versions)
        )
        self._subscriptions[request.type_url] = subscription
        return subscription

    def _acknowledge(
        self, request: discovery_pb2.DeltaDiscoveryRequest, subscription: _DeltaSubscription
    ) -> None:
        nonce = request.response_nonce
        if not nonce:
            return  # a pure subscription change
        stats = self._stats.of(request.type_url)
        if nonce != subscription.last_nonce:
            stats.stale_ignored += 1
        elif request.HasField("error_detail"):
            stats.nacks += 1
            stats.last_nack_message = request.error_detail.message
            stats.last_nack_version = subscription.last_version
            logger.warning(
                "node %s rejected delta %s version %s (nonce %s): %s",
                self.node_id or "?",
                request.type_url.rsplit(".", 1)[-1],
                subscription.last_version,
                nonce,
                request.error_detail.message,
            )
        else:
            stats.acks += 1
            stats.last_acked_version = subscription.last_version

    def _respond(
        self, type_url: str, subscription: _DeltaSubscription, snapshot: Snapshot | None
    ) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        if snapshot is None:
            return []
        typed = snapshot.resources(type_url)
        changed = [
            name
            for name, version in typed.resource_versions.items()
            if subscription.in_scope(name) and subscription.held.get(name) != version
        ]
        removed = sorted(
            name
            for name in subscription.held
            if name not in typed.items and subscription.in_scope(name)
        )
        if not changed and not removed and subscription.answered:
            return []
        packed = dict(zip(sorted(changed), typed.packed(changed), strict=True))
        resources = [
            discovery_pb2.Resource(name=name, version=typed.resource_versions[name], resource=any_)
            for name, any_ in packed.items()
        ]
        for name in changed:
            subscription.held[name] = typed.resource_versions[name]
        for name in removed:
            del subscription.held[name]
        nonce = next(self._nonces)
        subscription.last_nonce = nonce
        subscription.last_version = typed.version
        subscription.answered = True
        self._stats.of(type_url).responses += 1
        return [
            discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=typed.version,
                resources=resources,
                removed_resources=removed,
                type_url=type_url,
                nonce=nonce,
            )
        ]
