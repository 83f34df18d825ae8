"""Request and error rates per replica group over a sliding window, from Envoy's counters.

Pure layer: no I/O, no clock. The balancer loop feeds it cumulative per-host counters
(Envoy `/clusters`: `rq_total`, `rq_error`, one reading per Envoy and host, once a second)
with the time it read them; the admin status asks for rates.

Why per-host counters and not the cluster's `upstream_rq_5xx`: an engine fault is a gRPC
error status in the trailers of an HTTP 200, so the cluster counts it as a 2xx, while the
host's `rq_error` counts it (verified on Envoy 1.40). Requests refused before a host was
picked (no healthy upstream) are charged to no host and do not appear here.

Counters only grow, except when a host is removed and added again or Envoy restarts: a
reading below the previous one is a reset, and the new value is what happened since
(Prometheus `rate()` does the same). Each Envoy is an origin: the first answer of an
origin is a baseline only (its counters hold traffic from before we looked); after that a
host new in its answer was created since its last answer and counts from zero. An origin
that does not answer keeps its last counters, so traffic across the gap is not lost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_WINDOW_S = 10.0


@dataclass(frozen=True)
class RequestCounts:
    """Cumulative requests and failed requests (5xx answers, gRPC error statuses)."""

    requests: float = 0.0
    errors: float = 0.0

    def __add__(self, other: RequestCounts) -> RequestCounts:
        return RequestCounts(self.requests + other.requests, self.errors + other.errors)

    def since(self, earlier: RequestCounts) -> RequestCounts:
        """What was counted between `earlier` and this reading, resets taken into account."""
        return RequestCounts(
            _increase(earlier.requests, self.requests), _increase(earlier.errors, self.errors)
        )


def _increase(earlier: float, now: float) -> float:
    return now - earlier if now >= earlier else now


@dataclass(frozen=True)
class TrafficRate:
    """Requests and errors per second over `window_s` seconds (less while warming up)."""

    requests_per_s: float
    errors_per_s: float
    window_s: float

    @property
    def error_share(self) -> float | None:
        """Failed requests / requests; None when there were none."""
        if self.requests_per_s <= 0:
            return None
        return min(1.0, self.errors_per_s / self.requests_per_s)


@dataclass(frozen=True)
class _Interval:
    start: float
    end: float
    counts: Mapping[str, RequestCounts]  # group key -> what it did in [start, end]


# One reading: origin (an Envoy) -> group key -> source (a host) -> cumulative counts.
Reading = Mapping[str, Mapping[str, Mapping[str, RequestCounts]]]


class TrafficWindow:
    """Rates per group key (an Envoy cluster name) over the last `window_s` seconds."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        self._previous: dict[str, dict[tuple[str, str], RequestCounts]] = {}
        self._previous_at: float | None = None
        self._intervals: deque[_Interval] = deque()

    @property
    def last_observed(self) -> float | None:
        """When the latest reading was taken (the caller's clock), None before the first."""
        return self._previous_at

    def observe(self, now: float, reading: Reading) -> None:
        """Add a reading taken at `now` (monotonic seconds, increasing) from the origins
        that answered."""
        if self._previous_at is not None and now <= self._previous_at:
            return  # out of order or repeated: nothing new to learn from it
        moved: dict[str, RequestCounts] = {}
        for origin, groups in reading.items():
            current = {
                (group, source): counts
                for group, sources in groups.items()
                for source, counts in sources.items()
            }
            earlier = self._previous.get(origin)
            if earlier is not None:
                for (group, source), counts in current.items():
                    since = counts.since(earlier.get((group, source), RequestCounts()))
                    moved[group] = moved.get(group, RequestCounts()) + since
            self._previous[origin] = current
        if self._previous_at is not None:
            self._intervals.append(_Interval(self._previous_at, now, moved))
        self._previous_at = now
        while self._intervals and self._intervals[0].start < now - self.window_s:
            self._intervals.popleft()

    def rate(self, group: str) -> TrafficRate | None:
        """The group's rates over the window ending at the latest reading; None until two
        readings span some time."""
        if not self._intervals:
            return None
        span = self._intervals[-1].end - self._intervals[0].start
        total = RequestCounts()
        for interval in self._intervals:
            total = total + interval.counts.get(group, RequestCounts())
        return TrafficRate(total.requests / span, total.errors / span, span)
