"""The snapshot cache: holds the current snapshot and wakes the streams that wait for a new one.

Layer: control plane, xDS state (in-memory; asyncio). Modelled on go-control-plane's
`pkg/cache/v3/simple.go`, reduced to one snapshot for every node. `set_snapshot` refuses an
inconsistent snapshot and keeps the last good one, so Envoy is never told about a route to a
cluster it will not get. Call it from the event loop that runs the xDS server (asyncio events are
not thread-safe); use `loop.call_soon_threadsafe` from other threads.
"""

from __future__ import annotations

import asyncio
import logging

from control_plane.xds.snapshot import InconsistentSnapshotError, Snapshot

logger = logging.getLogger(__name__)


class SnapshotCache:
    """The latest consistent snapshot, numbered by a generation that grows with each change."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self._snapshot: Snapshot | None = None
        self._generation = 0
        self._waiters: set[asyncio.Event] = set()
        self.rejected = 0
        self.last_rejection: str | None = None
        if snapshot is not None:
            self.set_snapshot(snapshot)

    @property
    def current(self) -> Snapshot | None:
        """The snapshot being served, or None before the first one."""
        return self._snapshot

    @property
    def generation(self) -> int:
        """0 before any snapshot; +1 for every accepted snapshot."""
        return self._generation

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """Publish `snapshot` to every stream, or raise `InconsistentSnapshotError` and keep the
        previous one."""
        try:
            snapshot.consistent()
        except InconsistentSnapshotError as error:
            self.rejected += 1
            self.last_rejection = str(error)
            logger.error("refusing snapshot, keeping the previous one: %s", error)
            raise
        self._snapshot = snapshot
        self._generation += 1
        logger.info("snapshot %d set: %s", self._generation, snapshot.versions())
        for waiter in self._waiters:
            waiter.set()

    async def next_snapshot(self, after_generation: int) -> tuple[int, Snapshot]:
        """Wait until a snapshot newer than `after_generation` is set; return it and its number.

        Returns at once when the cache already holds a newer one, so a caller that passes the
        generation it last saw never misses a change. Snapshots set in between are skipped:
        only the latest matters.
        """
        while self._snapshot is None or self._generation <= after_generation:
            waiter = asyncio.Event()
            self._waiters.add(waiter)
            try:
                await waiter.wait()
            finally:
                self._waiters.discard(waiter)
        return self._generation, self._snapshot

    @property
    def waiting(self) -> int:
        """How many callers are blocked in `next_snapshot` (one per open stream)."""
        return len(self._waiters)
