"""Prometheus metrics of the request processor: time per phase, detections.

The response-body phase runs once per streamed chunk, so its histogram is the
per-chunk cost. Detections carry category, direction and action, never values.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from safety_filter.checks import Match

# ext_proc work is tens of microseconds to a few milliseconds (ENVOY_NOTES: 1-4 us
# a chunk in Python, 0.1-0.25 ms a chunk through Envoy).
PHASE_BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 0.1)


class ExtProcMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.phase_seconds = Histogram(
            "frugal_extproc_phase_seconds",
            "Time the request processor spends per ext_proc message, by phase.",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=self.registry,
        )
        self.detections = Counter(
            "frugal_content_detections",
            "Sensitive content found, by category, direction (prompt, output) and action.",
            ["category", "direction", "action"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "frugal_extproc_refusals",
            "Requests the processor refused, by OpenAI error code.",
            ["code"],
            registry=self.registry,
        )

    def detected(self, matches: Iterable[Match], direction: str, action: str) -> None:
        for match in matches:
            self.detections.labels(match.category, direction, action).inc()
