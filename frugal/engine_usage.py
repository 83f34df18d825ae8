"""Asking an engine worker what it generated for a request (shared library, gRPC edge).

A worker reports a request's tokens in its trailers, which the gateway settles the key's
token budget and usage ledger from. When the client leaves mid-stream, Envoy resets the
upstream stream and the trailers never come; the gateway then asks the replica that served
the request (Envoy's `upstream.address`, e.g. "127.0.0.1:50061") over the worker's
internal `frugal.v1.EngineUsage` service, by the request's `x-request-id`
(`frugal.wire.REQUEST_ID_HEADER`, which Envoy forwards to the worker). The worker counts
what the engine generated, tokens the client never saw included.

`EngineUsageClient` keeps one grpc.aio channel per worker address, the least recently
used closed beyond a bound, so a gateway process holds one HTTP/2 connection per replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import grpc

from frugal.v1 import engine_usage_pb2 as pb
from frugal.v1 import engine_usage_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

# Far more replicas than one gateway process routes to; beyond it the coldest goes.
MAX_CHANNELS = 256
# The call's own time on top of the wait the worker is asked for: one loopback or LAN
# round trip, and the connection set-up on a channel's first use.
RPC_MARGIN_SECONDS = 0.5
# The longest wait for a running request to end that a worker grants (it caps what it is
# asked for): a client's reset reaches the engine within milliseconds, and the gateway
# holds the request's settlement while it waits.
MAX_WAIT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class EngineUsage:
    """A request's tokens as its worker counted them; `finished`: the request has ended
    and the counts are final (False: it was still running when the wait ran out, and the
    counts are as far as it had got)."""

    finished: bool
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class EngineUsageClient:
    """Asks workers about their requests; one per process (its channels are reused)."""

    def __init__(
        self, max_channels: int = MAX_CHANNELS, margin_s: float = RPC_MARGIN_SECONDS
    ) -> None:
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self._max_channels = max_channels
        self._margin_s = margin_s
        # address -> (channel, stub), least recently used first.
        self._channels: OrderedDict[str, tuple[grpc.aio.Channel, Any]] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    async def request_usage(
        self, address: str, request_id: str, wait_s: float
    ) -> EngineUsage | None:
        """What the worker at `address` ("host:port") generated for `request_id`, waiting
        up to `wait_s` (capped at MAX_WAIT_SECONDS) for the request to end if it is still
        running. None when the worker does not know the request, or does not answer
        within the wait plus a margin."""
        wait_s = min(max(wait_s, 0.0), MAX_WAIT_SECONDS)
        request = pb.RequestUsageRequest(request_id=request_id, wait_ms=round(wait_s * 1000))
        try:
            reply = await self._stub(address).RequestUsage(request, timeout=wait_s + self._margin_s)
        except grpc.aio.AioRpcError as exc:
            logger.warning("usage of request %s from %s: %s", request_id, address, exc.code().name)
            return None
        if not reply.found:
            return None
        return EngineUsage(
            finished=reply.finished,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
        )

    async def close(self) -> None:
        """Close every channel (calls still running on them are cancelled)."""
        channels = [channel for channel, _ in self._channels.values()]
        self._channels.clear()
        await asyncio.gather(*(channel.close() for channel in channels))
        await asyncio.gather(*self._closing)

    def _stub(self, address: str) -> Any:
        cached = self._channels.get(address)
        if cached is not None:
            self._channels.move_to_end(address)
            return cached[1]
        channel = grpc.aio.insecure_channel(address)
        # The generated stub is untyped (grpc's stubs are not installed here).
        stub_class: Any = pb_grpc.EngineUsageStub
        stub = stub_class(channel)
        self._channels[address] = (channel, stub)
        while len(self._channels) > self._max_channels:
            _, (coldest, _) = self._channels.popitem(last=False)
            self._close_later(coldest)
        return stub

    def _close_later(self, channel: grpc.aio.Channel) -> None:
        """An evicted channel may still carry a call: let it finish (within its deadline)."""
        task = asyncio.create_task(channel.close(grace=MAX_WAIT_SECONDS + self._margin_s))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
