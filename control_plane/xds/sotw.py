"""State-of-the-world xDS protocol state for one ADS stream: which request gets which response.

Layer: control plane, xDS protocol core (pure; no I/O, no asyncio). Modelled on go-control-plane's
`pkg/server/sotw/v3/xds.go`. Per type URL the stream remembers the names subscribed, the last
version and nonce sent. Rules (https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol):

- empty response_nonce, or a type not seen yet on this stream: a subscription; answer it;
- a nonce other than the last one sent for that type: stale; ignore it;
- the last nonce without error_detail: an ACK; answer only if the subscribed names changed
  (answering every ACK would loop forever);
- the last nonce with error_detail: a NACK; Envoy keeps its last good config; log, count, and do
  not resend the refused version, unless the NACK changes the names subscribed (answered then,
  like an ACK that changes them: a property test found the change otherwise lost);
- a new snapshot: answer every subscribed type whose version differs from the last one sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from envoy.service.discovery.v3 import discovery_pb2

from control_plane.xds.resources import (
    EXPLICIT_WILDCARD,
    WILDCARD_TYPES,
    push_rank,
)
from control_plane.xds.snapshot import Snapshot
from control_plane.xds.stats import XdsStats

logger = logging.getLogger(__name__)


@dataclass
class _Subscription:
    names: frozenset[str]
    last_version: str | None = None
    last_nonce: str | None = None

    def wildcard(self, type_url: str) -> bool:
        if EXPLICIT_WILDCARD in self.names:
            return True
        return type_url in WILDCARD_TYPES and not self.names


class SotwStream:
    """The protocol state of one state-of-the-world ADS stream."""

    def __init__(self, stream_id: str, stats: XdsStats, nonces: Iterator[str]) -> None:
        self.stream_id = stream_id
        self.node_id = ""
        self._stats = stats
        self._nonces = nonces
        self._subscriptions: dict[str, _Subscription] = {}

    @property
    def subscribed_types(self) -> list[str]:
        return sorted(self._subscriptions, key=push_rank)

    def on_request(
        self, request: discovery_pb2.DiscoveryRequest, snapshot: Snapshot | None
    ) -> list[discovery_pb2.DiscoveryResponse]:
        """Responses owed for `request` given the current snapshot (none before the first)."""
        if request.HasField("node") and request.node.id:
            self.node_id = request.node.id
        type_url = request.type_url
        if not type_url:
            logger.warning("stream %s (%s): request without type_url", self.stream_id, self.node_id)
            return []
        names = frozenset(request.resource_names)
        subscription = self._subscriptions.get(type_url)
        nonce = request.response_nonce
        if subscription is None or not nonce:
            subscription = self._subscriptions[type_url] = _Subscription(names=names)
            logger.debug(
                "stream %s (%s) subscribes %s %s",
                self.stream_id,
                self.node_id,
                type_url,
                sorted(names),
            )
            return self._respond(type_url, subscription, snapshot)
        stats = self._stats.of(type_url)
        if nonce != subscription.last_nonce:
            stats.stale_ignored += 1
            return []
        names_changed = names != subscription.names
        subscription.names = names
        if request.HasField("error_detail"):
            self._on_nack(request, subscription)
        else:
            stats.acks += 1
            stats.last_acked_version = request.version_info
        if names_changed:
            # A NACK carries the client's subscription too: a change in it is answered
            # (go-control-plane does the same); an unchanged one is not, so the refused
            # version is not sent again for the same names.
            return self._respond(type_url, subscription, snapshot)
        return []

    def on_snapshot(self, snapshot: Snapshot) -> list[discovery_pb2.DiscoveryResponse]:
        """Responses owed to this stream now that `snapshot` is current, in push order."""
        responses: list[discovery_pb2.DiscoveryResponse] = []
        for type_url in self.subscribed_types:
            subscription = self._subscriptions[type_url]
            if snapshot.version(type_url) != subscription.last_version:
                responses.extend(self._respond(type_url, subscription, snapshot))
        return responses

    def _on_nack(
        self, request: discovery_pb2.DiscoveryRequest, subscription: _Subscription
    ) -> None:
        stats = self._stats.of(request.type_url)
        stats.nacks += 1
        stats.last_nack_version = subscription.last_version
        stats.last_nack_message = request.error_detail.message
        logger.warning(
            "node %s rejected %s version %s (keeps version %r): %s",
            self.node_id or "?",
            request.type_url.rsplit(".", 1)[-1],
            subscription.last_version,
            request.version_info,
            request.error_detail.message,
        )

    def _respond(
        self, type_url: str, subscription: _Subscription, snapshot: Snapshot | None
    ) -> list[discovery_pb2.DiscoveryResponse]:
        if snapshot is None:
            return []  # answered when the first snapshot is set
        typed = snapshot.resources(type_url)
        names = None if subscription.wildcard(type_url) else subscription.names
        nonce = next(self._nonces)
        subscription.last_version = typed.version
        subscription.last_nonce = nonce
        self._stats.of(type_url).responses += 1
        return [
            discovery_pb2.DiscoveryResponse(
                version_info=typed.version,
                resources=typed.packed(names),
                type_url=type_url,
                nonce=nonce,
            )
        ]
