"""The wire contract between Frugal's processes (shared library, pure constants).

Header, trailer and metadata names and port conventions that more than one service reads or
writes are defined here once; a service never spells them itself.
"""

from __future__ import annotations

# Default ports (ARCHITECTURE.md, "Ports"): the safety filter's gRPC port, and the first
# engine worker's. An engine worker's Prometheus port is its gRPC port plus the offset.
DEFAULT_SAFETY_FILTER_PORT = 50051
DEFAULT_ENGINE_PORT = 50061
ENGINE_METRICS_PORT_OFFSET = 1000
