"""Free loopback ports for a benchmark stack (I/O layer: binds sockets to probe)."""

from __future__ import annotations

import socket

from frugal.bench.fleet import TP2_REPLICAS, StackPorts
from frugal.wire import engine_metrics_port

_ATTEMPTS = 1000


def _ephemeral_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_free(port: int) -> bool:
    """Whether a loopback port can be bound now."""
    if port > 65535:
        return False
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortPicker:
    """Hands out distinct ports that are free now; an engine's port comes with its metrics
    port (+1000) free and unclaimed too."""

    def __init__(self) -> None:
        self._claimed: set[int] = set()

    def take(self, *, engine: bool = False) -> int:
        for _ in range(_ATTEMPTS):
            port = _ephemeral_port()
            wanted = [port, engine_metrics_port(port)] if engine else [port]
            if self._claimed.intersection(wanted):
                continue
            if engine and not is_free(wanted[1]):
                continue
            self._claimed.update(wanted)
            return port
        raise RuntimeError(f"no free loopback port after {_ATTEMPTS} attempts")

    def take_consecutive(self, count: int) -> int:
        """The first of `count` consecutive ports, all free now and unclaimed."""
        for _ in range(_ATTEMPTS):
            first = _ephemeral_port()
            wanted = set(range(first, first + count))
            if self._claimed & wanted or not all(is_free(p) for p in wanted - {first}):
                continue
            self._claimed.update(wanted)
            return first
        raise RuntimeError(f"no {count} consecutive free loopback ports")

    def stack_ports(self) -> StackPorts:
        return StackPorts(
            listener=self.take(),
            xds=self.take(),
            envoy_admin=self.take(),
            safety_filter=self.take(),
            admin=self.take(),
            redis=self.take(),
            tp8=(self.take(engine=True),),
            tp2=tuple(self.take(engine=True) for _ in range(TP2_REPLICAS)),
        )
