"""Prometheus metrics of the request processor: phases, detections, and each request's outcome.

The response-body phase runs once per whole body (a unary answer, an error); a
started stream has only its headers and trailers here. Detections carry category,
direction and action, never values (a stream's output detections are what the
worker's checks report in its trailers).
Per request (by model_name, the label the engine workers use too): TTFT, time per
output token and end-to-end time as the gateway sees them, tokens used, requests by
HTTP status and errors by reason; `finished` observes a RequestRecord once, at the
end of its request.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from frugal.content_checks import Match
from safety_filter.extproc.group_tally import GroupTally
from safety_filter.extproc.request_record import RequestRecord
from safety_filter.extproc.usage import Accounting

# ext_proc work is tens of microseconds to a few milliseconds (ENVOY_NOTES: 1-4 us
# a chunk in Python, 0.1-0.25 ms a chunk through Envoy).
PHASE_BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 0.1)
# First token: one engine step at low load (a few ms) to deep queues (tens of seconds).
TTFT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# One decode step: ~1 ms (small model, small batch) to ~0.5 s (large batch, slow engine).
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
# A whole request: a short answer in milliseconds to thousands of tokens in minutes.
E2E_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0,
    600.0,
)  # fmt: skip

MODEL = "model_name"


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
        self._phases: dict[str, Histogram] = {}  # phase -> its child, looked up once
        # A turn is one wait of Envoy's for Python: the processor answering what Envoy
        # sent (the request's headers and body chunks are answered together, in one).
        self.turns = Counter(
            "frugal_extproc_turns",
            "Times the processor answered Envoy, by side (request: before the engine).",
            ["side"],
            registry=self.registry,
        )
        self.request_turns = self.turns.labels("request")
        self.response_turns = self.turns.labels("response")
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
        self.group_picks = Counter(
            "frugal_group_picks",
            "Requests whose replica group the processor picked (models with a group picker).",
            [MODEL, "group"],
            registry=self.registry,
        )
        # Also the RateLimitService's (safety_filter.ratelimit), when Envoy calls it.
        self.rate_decisions = Counter(
            "frugal_ratelimit_decisions",
            "Per-key request rate decisions, by decision (ok, over_limit, unlimited, invalid, "
            "error).",
            ["decision"],
            registry=self.registry,
        )
        self.ttft_seconds = Histogram(
            "frugal_request_ttft_seconds",
            "Request headers to the first token at the gateway (unary: the body).",
            [MODEL],
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.tpot_seconds = Histogram(
            "frugal_request_tpot_seconds",
            "Time per output token after the first, of streamed responses.",
            [MODEL],
            buckets=TPOT_BUCKETS,
            registry=self.registry,
        )
        self.e2e_seconds = Histogram(
            "frugal_request_e2e_seconds",
            "Request headers to the end of the response.",
            [MODEL],
            buckets=E2E_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "frugal_prompt_tokens",
            "Prompt tokens, as the engine counted them.",
            [MODEL],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "frugal_completion_tokens",
            "Generated tokens, as the engine counted them.",
            [MODEL],
            registry=self.registry,
        )
        self.requests = Counter(
            "frugal_requests",
            "Inference requests, by model and HTTP status.",
            [MODEL, "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "frugal_request_errors",
            "Failed inference requests, by model and reason (an OpenAI error code, "
            "output_blocked or client_disconnected).",
            [MODEL, "reason"],
            registry=self.registry,
        )

    def observe_phase(self, phase: str, seconds: float) -> None:
        child = self._phases.get(phase)
        if child is None:
            child = self._phases[phase] = self.phase_seconds.labels(phase)
        child.observe(seconds)

    def watch_accounting(self, accounting: Accounting) -> None:
        """Admission and settlement figures, read when scraped."""
        settlements = accounting.settlements
        figures = (
            ("frugal_requests_shed", "Requests shed before admission (503 overloaded).",
             lambda: accounting.shed),
            ("frugal_settlements_pending", "Settlements not yet taken by Redis.",
             lambda: settlements.pending),
            ("frugal_settlements_settled", "Settlements Redis has taken.",
             lambda: settlements.settled),
            ("frugal_settlement_retries", "Settle calls tried again after a Redis error.",
             lambda: settlements.retries),
            ("frugal_settlements_abandoned",
             "Settlements given up after retrying for most of an hour (logged as errors).",
             lambda: settlements.abandoned),
        )  # fmt: skip
        for name, text, read in figures:
            Gauge(name, text, registry=self.registry).set_function(read)

    def watch_groups(self, tally: GroupTally) -> None:
        """The group picker's counts of what this process sent each group, read when
        scraped (frugal_group_picks_total counts the picks)."""
        self.registry.register(_GroupCounts(tally))

    def detected(self, matches: Iterable[Match], direction: str, action: str) -> None:
        self.detected_categories((m.category for m in matches), direction, action)

    def detected_categories(self, categories: Iterable[str], direction: str, action: str) -> None:
        for category in categories:
            self.detections.labels(category, direction, action).inc()

    def finished(self, record: RequestRecord) -> None:
        model = record.model
        self.requests.labels(model, str(record.status)).inc()
        if record.error is not None:
            self.errors.labels(model, record.error).inc()
        timings = (
            (self.ttft_seconds, record.ttft_s()),
            (self.tpot_seconds, record.tpot_s()),
            (self.e2e_seconds, record.e2e_s()),
        )
        for histogram, seconds in timings:
            if seconds is not None:
                histogram.labels(model).observe(seconds)
        if record.prompt_tokens is not None:
            self.prompt_tokens.labels(model).inc(record.prompt_tokens)
        if record.completion_tokens is not None:
            self.completion_tokens.labels(model).inc(record.completion_tokens)


class _GroupCounts(Collector):
    def __init__(self, tally: GroupTally) -> None:
        self._tally = tally

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "frugal_group_picker_in_flight",
            "Requests this process picked a group for and whose stream has not ended.",
            labels=[MODEL, "group"],
        )
        awaiting = GaugeMetricFamily(
            "frugal_group_picker_awaiting_tokens",
            "Estimated prompt tokens of those without response headers yet.",
            labels=[MODEL, "group"],
        )
        for (model, group), (requests, tokens) in self._tally.counts().items():
            in_flight.add_metric([model, group], requests)
            awaiting.add_metric([model, group], tokens)
        yield in_flight
        yield awaiting
        yield GaugeMetricFamily(
            "frugal_group_picker_views",
            "Safety filter processes sharing the requests, this one included: the factor "
            "it scales its own counts by.",
            value=self._tally.views,
        )
