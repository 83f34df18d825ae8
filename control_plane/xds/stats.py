"""Counters of the xDS conversation with Envoy: responses, ACKs, NACKs and stale requests.

Layer: control plane, xDS observability (in-memory; pure). Tests read them to know what Envoy made
of a push; a metrics exporter can read them too. One `XdsStats` per servicer so that servers in
one process (tests) do not share counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TypeStats:
    """What happened to one resource type, summed over all streams."""

    responses: int = 0
    acks: int = 0
    nacks: int = 0
    stale_ignored: int = 0
    last_acked_version: str | None = None
    last_nack_version: str | None = None  # the version Envoy refused
    last_nack_message: str | None = None


@dataclass
class XdsStats:
    """Per-type counters plus stream counts for one servicer."""

    streams_opened: int = 0
    streams_closed: int = 0
    types: dict[str, TypeStats] = field(default_factory=dict)

    def of(self, type_url: str) -> TypeStats:
        """The counters of `type_url` (zeroes if nothing happened yet)."""
        found = self.types.get(type_url)
        if found is None:
            found = self.types[type_url] = TypeStats()
        return found

    @property
    def open_streams(self) -> int:
        return self.streams_opened - self.streams_closed
