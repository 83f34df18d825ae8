"""The ADS gRPC servicer: runs one protocol state machine per Envoy stream over grpc.aio.

Layer: control plane, serving edge (I/O). It converts and schedules; which response a request or
a new snapshot earns is decided in `sotw.py` / `delta.py`. For every stream a reader task feeds
Envoy's requests into a queue and a watcher task feeds snapshot changes into the same queue, so
pushes never wait for Envoy to speak and requests are never blocked by a push. Both tasks are
cancelled when the stream ends, including when the client goes away.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any, Final, Protocol

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from control_plane.xds.cache import SnapshotCache
from control_plane.xds.delta import DeltaStream
from control_plane.xds.snapshot import Snapshot
from control_plane.xds.sotw import SotwStream
from control_plane.xds.stats import XdsStats

logger = logging.getLogger(__name__)

_MiB = 1024 * 1024

# Envoy keeps its ADS connection open for the life of the process and may ping it
# (http2_protocol_options.connection_keepalive); permit pings with no active call and never
# count them as abuse. Large limits leave room for big listeners (a transcoder's descriptor).
ADS_SERVER_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 64 * _MiB),
    ("grpc.max_send_message_length", 64 * _MiB),
)


class _StreamState(Protocol):
    node_id: str

    def on_request(self, request: Any, snapshot: Snapshot | None) -> list[Any]: ...

    def on_snapshot(self, snapshot: Snapshot) -> list[Any]: ...


class _Changed:
    """Queue marker: the cache holds a newer snapshot."""


class _Ended:
    """Queue marker: Envoy closed its side, or reading failed."""


_CHANGED: Final = _Changed()
_ENDED: Final = _Ended()


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Aggregated Discovery Service over one `SnapshotCache`, state of the world and delta."""

    def __init__(self, cache: SnapshotCache, stats: XdsStats | None = None) -> None:
        self.cache = cache
        self.stats = stats if stats is not None else XdsStats()
        prefix = secrets.token_hex(4)  # nonces stay unique across server restarts
        self._nonces: Iterator[str] = (f"{prefix}-{n}" for n in itertools.count(1))
        self._stream_ids = itertools.count(1)

    @property
    def open_streams(self) -> int:
        return self.stats.open_streams

    # grpc.aio serves a stream-stream method as an async generator only when the method itself
    # is one, so these delegate instead of returning `_serve(...)`.
    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        stream = SotwStream(f"sotw-{next(self._stream_ids)}", self.stats, self._nonces)
        async with aclosing(self._serve(stream, request_iterator, context)) as responses:
            async for response in responses:
                yield response

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        stream = DeltaStream(f"delta-{next(self._stream_ids)}", self.stats, self._nonces)
        async with aclosing(self._serve(stream, request_iterator, context)) as responses:
            async for response in responses:
                yield response

    async def _serve(
        self,
        stream: _StreamState,
        request_iterator: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
    ) -> AsyncGenerator[Any, None]:
        events: asyncio.Queue[Any] = asyncio.Queue()
        # Taken before the first request is read: any snapshot set after this point reaches the
        # stream through the watcher, any set before it is what the first request is answered from.
        generation = self.cache.generation
        reader = asyncio.create_task(_read_requests(request_iterator, events))
        watcher = asyncio.create_task(_watch_cache(self.cache, generation, events))
        self.stats.streams_opened += 1
        logger.info("ADS stream from %s opened", context.peer())
        try:
            while True:
                event = await events.get()
                if event is _ENDED:
                    return
                if event is _CHANGED:
                    snapshot = self.cache.current
                    responses = stream.on_snapshot(snapshot) if snapshot is not None else []
                else:
                    responses = stream.on_request(event, self.cache.current)
                for response in responses:
                    yield response
        finally:
            reader.cancel()
            watcher.cancel()
            try:
                # grpc.aio may cancel the handler again while this cleanup waits (a client
                # gone mid-stream): the stream is counted closed all the same.
                await asyncio.shield(asyncio.gather(reader, watcher, return_exceptions=True))
            finally:
                self.stats.streams_closed += 1
                logger.info("ADS stream from %s (node %r) closed", context.peer(), stream.node_id)


async def _read_requests(requests: AsyncIterator[Any], events: asyncio.Queue[Any]) -> None:
    try:
        async for request in requests:
            events.put_nowait(request)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # the stream is gone either way; say why once
        logger.info("ADS stream read ended: %r", error)
    finally:
        events.put_nowait(_ENDED)


async def _watch_cache(cache: SnapshotCache, seen: int, events: asyncio.Queue[Any]) -> None:
    while True:
        seen, _ = await cache.next_snapshot(seen)
        events.put_nowait(_CHANGED)


def add_ads_servicer(
    server: grpc.aio.Server, cache: SnapshotCache, stats: XdsStats | None = None
) -> AdsServicer:
    """Register an `AdsServicer` for `cache` on `server` (create it with ADS_SERVER_OPTIONS)."""
    servicer = AdsServicer(cache, stats)
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)
    return servicer
