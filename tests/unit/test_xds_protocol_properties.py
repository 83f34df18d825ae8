"""The xDS server's nonce and version handling, under any sequence of client requests.

Stateful property tests (hypothesis) of the pure protocol cores, control_plane.xds.sotw and
control_plane.xds.delta: a model client subscribes, ACKs with the right nonce, NACKs,
sends stale and unknown nonces, changes the names it subscribes to (in any of those), while
the server gets new snapshots. After every step: a stale or unknown nonce caused no push and
changed nothing; a NACK did not advance the acked version; every update of the latest
snapshot has been sent (nothing lost), for exactly the names subscribed; nonces are unique.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from control_plane.xds.delta import DeltaStream
from control_plane.xds.resources import ENDPOINT_TYPE, PUSH_ORDER, ROUTE_TYPE, WILDCARD_TYPES
from control_plane.xds.snapshot import Snapshot
from control_plane.xds.sotw import SotwStream
from control_plane.xds.stats import XdsStats
from tests.helpers.xds_resources import eds_cluster, http_listener, load_assignment, route_config

NAMED_TYPES = (ENDPOINT_TYPE, ROUTE_TYPE)  # a client names what it wants of these
NAMES = st.frozensets(st.sampled_from(["a", "b", "c", "public", "other"]), max_size=4)
TYPES = st.sampled_from(PUSH_ORDER)
NAMED = st.sampled_from(NAMED_TYPES)
STEPS = settings(max_examples=60, stateful_step_count=25, deadline=None)


def snapshot_of(clusters: frozenset[str], port: int, body: str, routes: frozenset[str]) -> Snapshot:
    return Snapshot.from_resources(
        listeners=[http_listener("public", 10000, "public")],
        routes=[route_config(name, body=body) for name in sorted(routes)],
        clusters=[eds_cluster(name) for name in sorted(clusters)],
        endpoints=[load_assignment(name, port) for name in sorted(clusters)],
    )


SNAPSHOTS = st.builds(
    snapshot_of,
    st.frozensets(st.sampled_from("abc")),
    st.sampled_from([9001, 9002]),
    st.sampled_from(["ok", "v2"]),
    st.frozensets(st.sampled_from(["public", "other"])),
)


def nonces() -> Iterator[str]:
    return (f"nonce-{n}" for n in itertools.count())


def _node() -> base_pb2.Node:
    return base_pb2.Node(id="envoy-1")


def _nacked(request: Any) -> Any:
    """`request` as Envoy sends a rejection (INVALID_ARGUMENT and its reason)."""
    request.error_detail.code = 3
    request.error_detail.message = "refused"
    return request


class SotwClient(RuleBasedStateMachine):
    """Envoy on one state-of-the-world ADS stream, as a model."""

    def __init__(self) -> None:
        super().__init__()
        self.stats = XdsStats()
        self.stream = SotwStream("s", self.stats, nonces())
        self.snapshot: Snapshot | None = None
        self.names: dict[str, frozenset[str]] = {t: frozenset() for t in PUSH_ORDER}
        self.sent: dict[str, list[discovery_pb2.DiscoveryResponse]] = {t: [] for t in PUSH_ORDER}
        self.seen_nonces: set[str] = set()

    def request(
        self, type_url: str, *, nonce: str, version: str, names: frozenset[str], nack: bool = False
    ) -> list[discovery_pb2.DiscoveryResponse]:
        request = discovery_pb2.DiscoveryRequest(
            node=_node(), type_url=type_url, resource_names=sorted(names),
            response_nonce=nonce, version_info=version,
        )  # fmt: skip
        if nack:
            request = _nacked(request)
        return self.record(self.stream.on_request(request, self.snapshot))

    def record(
        self, responses: list[discovery_pb2.DiscoveryResponse]
    ) -> list[discovery_pb2.DiscoveryResponse]:
        for response in responses:
            assert response.nonce not in self.seen_nonces
            self.seen_nonces.add(response.nonce)
            self.sent[response.type_url].append(response)
        return responses

    def last(self, type_url: str) -> discovery_pb2.DiscoveryResponse:
        return self.sent[type_url][-1]

    @initialize(first=st.one_of(st.none(), SNAPSHOTS), endpoints=NAMES, routes=NAMES)
    def subscribe(
        self, first: Snapshot | None, endpoints: frozenset[str], routes: frozenset[str]
    ) -> None:
        self.snapshot = first
        self.names[ENDPOINT_TYPE], self.names[ROUTE_TYPE] = endpoints, routes
        for type_url in PUSH_ORDER:
            answered = self.request(type_url, nonce="", version="", names=self.names[type_url])
            assert len(answered) == (0 if first is None else 1)

    @rule(snapshot=SNAPSHOTS)
    def new_snapshot(self, snapshot: Snapshot) -> None:
        before = {t: self.last(t).version_info if self.sent[t] else None for t in PUSH_ORDER}
        self.snapshot = snapshot
        pushed = self.record(self.stream.on_snapshot(snapshot))
        assert sorted(r.type_url for r in pushed) == sorted(
            t for t in PUSH_ORDER if before[t] != snapshot.version(t)
        )

    @precondition(lambda self: any(self.sent.values()))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        type_url = data.draw(st.sampled_from([t for t in PUSH_ORDER if self.sent[t]]))
        last = self.last(type_url)
        answer = self.request(
            type_url, nonce=last.nonce, version=last.version_info, names=self.names[type_url]
        )
        assert answer == []  # an ACK of what was sent asks for nothing more
        assert self.stats.of(type_url).last_acked_version == last.version_info

    @precondition(lambda self: any(self.sent.values()))
    @rule(data=st.data(), names=NAMES, change=st.booleans())
    def nack(self, data: st.DataObject, names: frozenset[str], change: bool) -> None:
        """A NACK carries the client's subscription, which may have changed meanwhile."""
        type_url = data.draw(st.sampled_from([t for t in PUSH_ORDER if self.sent[t]]))
        acked = self.stats.of(type_url).last_acked_version
        wanted = names if change and type_url in NAMED_TYPES else self.names[type_url]
        answer = self.request(
            type_url, nonce=self.last(type_url).nonce, version=acked or "", names=wanted, nack=True
        )
        assert self.stats.of(type_url).last_acked_version == acked
        if wanted == self.names[type_url]:
            assert answer == []  # the refused version is not sent again
        self.names[type_url] = wanted

    @rule(type_url=TYPES, names=NAMES, data=st.data())
    def stale(self, type_url: str, names: frozenset[str], data: st.DataObject) -> None:
        """An old or unknown nonce, with any names: ignored altogether."""
        old = [r.nonce for r in self.sent[type_url][:-1]]
        nonce = data.draw(st.sampled_from([*old, "unknown-nonce"]))
        stats = self.stats.of(type_url)
        acked, ignored = stats.last_acked_version, stats.stale_ignored
        assert self.request(type_url, nonce=nonce, version="x", names=names, nack=False) == []
        assert (stats.last_acked_version, stats.stale_ignored) == (acked, ignored + 1)

    @precondition(lambda self: any(self.sent[t] for t in NAMED_TYPES))
    @rule(data=st.data(), names=NAMES)
    def change_names(self, data: st.DataObject, names: frozenset[str]) -> None:
        type_url = data.draw(st.sampled_from([t for t in NAMED_TYPES if self.sent[t]]))
        last = self.last(type_url)
        changed = names != self.names[type_url]
        self.names[type_url] = names
        answer = self.request(type_url, nonce=last.nonce, version=last.version_info, names=names)
        assert len(answer) == (1 if changed and self.snapshot is not None else 0)

    @invariant()
    def the_latest_snapshot_was_sent_for_the_names_subscribed(self) -> None:
        if self.snapshot is None:
            return
        for type_url in PUSH_ORDER:
            typed = self.snapshot.resources(type_url)
            wildcard = type_url in WILDCARD_TYPES and not self.names[type_url]
            last = self.last(type_url)
            assert last.version_info == typed.version
            assert list(last.resources) == typed.packed(None if wildcard else self.names[type_url])


class DeltaClient(RuleBasedStateMachine):
    """Envoy on one delta ADS stream, as a model. `held` is what the server has sent per
    type (applied in order: resources set, removed_resources dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self.stats = XdsStats()
        self.stream = DeltaStream("d", self.stats, nonces())
        self.snapshot: Snapshot | None = None
        self.wildcard: dict[str, bool] = {t: t in WILDCARD_TYPES for t in PUSH_ORDER}
        self.names: dict[str, set[str]] = {t: set() for t in PUSH_ORDER}
        self.held: dict[str, dict[str, str]] = {t: {} for t in PUSH_ORDER}
        self.last_nonce: dict[str, str] = {}
        self.old_nonces: dict[str, list[str]] = {t: [] for t in PUSH_ORDER}
        self.seen_nonces: set[str] = set()

    def request(
        self, type_url: str, nack: bool = False, **fields: Any
    ) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        request = discovery_pb2.DeltaDiscoveryRequest(node=_node(), type_url=type_url, **fields)
        if nack:
            request = _nacked(request)
        responses = self.stream.on_request(request, self.snapshot)
        return self.record(responses)

    def record(
        self, responses: list[discovery_pb2.DeltaDiscoveryResponse]
    ) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        for response in responses:
            assert response.nonce not in self.seen_nonces
            self.seen_nonces.add(response.nonce)
            type_url = response.type_url
            if type_url in self.last_nonce:
                self.old_nonces[type_url].append(self.last_nonce[type_url])
            self.last_nonce[type_url] = response.nonce
            held = self.held[type_url]
            for resource in response.resources:
                assert self.in_scope(type_url, resource.name)
                held[resource.name] = resource.version
            for name in response.removed_resources:
                held.pop(name)
        return responses

    def in_scope(self, type_url: str, name: str) -> bool:
        return self.wildcard[type_url] or name in self.names[type_url]

    @initialize(first=st.one_of(st.none(), SNAPSHOTS), endpoints=NAMES, routes=NAMES)
    def subscribe(
        self, first: Snapshot | None, endpoints: frozenset[str], routes: frozenset[str]
    ) -> None:
        self.snapshot = first
        self.names[ENDPOINT_TYPE], self.names[ROUTE_TYPE] = set(endpoints), set(routes)
        for type_url in PUSH_ORDER:
            answered = self.request(type_url, resource_names_subscribe=sorted(self.names[type_url]))
            assert len(answered) == (0 if first is None else 1)

    @rule(snapshot=SNAPSHOTS)
    def new_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.record(self.stream.on_snapshot(snapshot))

    @precondition(lambda self: bool(self.last_nonce))
    @rule(data=st.data(), nack=st.booleans())
    def answer(self, data: st.DataObject, nack: bool) -> None:
        """ACK or NACK the last response of a type: nothing is pushed for it."""
        type_url = data.draw(st.sampled_from(sorted(self.last_nonce)))
        acked = self.stats.of(type_url).last_acked_version
        sent = self.request(type_url, nack, response_nonce=self.last_nonce[type_url])
        assert sent == []
        if nack:
            assert self.stats.of(type_url).last_acked_version == acked

    @rule(type_url=TYPES, data=st.data())
    def stale(self, type_url: str, data: st.DataObject) -> None:
        nonce = data.draw(st.sampled_from([*self.old_nonces[type_url], "unknown-nonce"]))
        acked = self.stats.of(type_url).last_acked_version
        assert self.request(type_url, response_nonce=nonce) == []
        assert self.stats.of(type_url).last_acked_version == acked

    @rule(type_url=NAMED, add=NAMES, drop=NAMES, data=st.data())
    def change_names(
        self, type_url: str, add: frozenset[str], drop: frozenset[str], data: st.DataObject
    ) -> None:
        """Subscription changes apply with any nonce: the last, a stale one, or none."""
        nonce = data.draw(
            st.sampled_from(["", *self.old_nonces[type_url], self.last_nonce.get(type_url, "")])
        )
        drop = drop - add
        self.names[type_url] = (self.names[type_url] | add) - drop
        for name in drop:
            self.held[type_url].pop(name, None)  # unsubscribed: the client forgets it
        self.request(
            type_url, response_nonce=nonce,
            resource_names_subscribe=sorted(add), resource_names_unsubscribe=sorted(drop),
        )  # fmt: skip

    @invariant()
    def every_update_of_the_latest_snapshot_was_sent(self) -> None:
        if self.snapshot is None:
            return
        for type_url in PUSH_ORDER:
            versions = self.snapshot.resources(type_url).resource_versions
            wanted = {n: v for n, v in versions.items() if self.in_scope(type_url, n)}
            assert self.held[type_url] == wanted


TestSotwNonces = SotwClient.TestCase
TestSotwNonces.settings = STEPS
TestDeltaNonces = DeltaClient.TestCase
TestDeltaNonces.settings = STEPS
