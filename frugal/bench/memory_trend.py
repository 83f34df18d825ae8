"""Whether a soak run's processes grow: resident memory and open files sampled over time.

Pure layer. A sample holds every process's RSS and open file descriptors at one moment;
`trends` fits a least-squares line to each process's samples after the warm-up (caches
fill and pools open during the first minute) and calls the process growing when the
line rises, over that window, by more than both a fraction of its median and a floor:
allocator noise moves RSS by a few MiB either way, a leak of one object per request
does not stop.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MIB = 1 << 20
# A line that rises by more than 5 % of the median RSS and 8 MiB over the window grows.
GROWTH_FRACTION = 0.05
GROWTH_FLOOR_MIB = 8.0
# Descriptors other than Redis connections: more than 32 opened and never closed over the
# window (the listener's and the engines' pools settle within the warm-up).
FD_GROWTH_FLOOR = 32


@dataclass(frozen=True)
class ProcessReading:
    rss_bytes: int
    open_fds: int
    # Of those, TCP connections to or from Redis: pooled (redis-py's pools are bounded
    # and open connections lazily, up to their bound, as load peaks), so they are left
    # out of the leak check and shown apart.
    redis_connections: int = 0

    @property
    def other_fds(self) -> int:
        return self.open_fds - self.redis_connections


@dataclass(frozen=True)
class MemorySample:
    at_s: float  # since the load started
    processes: dict[str, ProcessReading]  # label -> reading


@dataclass(frozen=True)
class ProcessTrend:
    process: str
    samples: int
    first_mib: float
    last_mib: float
    peak_mib: float
    slope_mib_per_min: float
    fds_first: int
    fds_last: int
    redis_first: int
    redis_last: int
    grows: bool
    leaks_fds: bool


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two distinct x)."""
    if len(points) < 2:
        return 0.0
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def _trend(process: str, window: list[tuple[float, ProcessReading]]) -> ProcessTrend:
    rss = [(at, reading.rss_bytes / MIB) for at, reading in window]
    fds = [(at, float(reading.other_fds)) for at, reading in window]
    span_s = window[-1][0] - window[0][0]
    slope = _slope(rss)  # MiB per second
    rise = slope * span_s
    median = statistics.median(value for _, value in rss)
    fd_rise = _slope(fds) * span_s
    return ProcessTrend(
        process=process,
        samples=len(window),
        first_mib=rss[0][1],
        last_mib=rss[-1][1],
        peak_mib=max(value for _, value in rss),
        slope_mib_per_min=slope * 60,
        fds_first=window[0][1].other_fds,
        fds_last=window[-1][1].other_fds,
        redis_first=window[0][1].redis_connections,
        redis_last=window[-1][1].redis_connections,
        grows=rise > max(GROWTH_FRACTION * median, GROWTH_FLOOR_MIB),
        leaks_fds=fd_rise > FD_GROWTH_FLOOR,
    )


def trends(samples: Sequence[MemorySample], warmup_s: float) -> list[ProcessTrend]:
    """One trend per process seen after the warm-up, in the order first seen. A process
    seen in fewer than three samples of the window gets none (it came or went)."""
    windows: dict[str, list[tuple[float, ProcessReading]]] = {}
    for sample in samples:
        if sample.at_s < warmup_s:
            continue
        for process, reading in sample.processes.items():
            windows.setdefault(process, []).append((sample.at_s, reading))
    return [_trend(name, window) for name, window in windows.items() if len(window) >= 3]


def render(found: Sequence[ProcessTrend]) -> list[str]:
    """A Markdown table of the trends."""
    lines = [
        "| process | samples | RSS first (MiB) | last | peak | slope (MiB/min) "
        "| other fds first→last | Redis connections | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in found:
        verdict = ", ".join(
            word for word, bad in (("grows", t.grows), ("leaks fds", t.leaks_fds)) if bad
        )
        lines.append(
            f"| {t.process} | {t.samples} | {t.first_mib:.1f} | {t.last_mib:.1f} "
            f"| {t.peak_mib:.1f} | {t.slope_mib_per_min:+.3f} | {t.fds_first}→{t.fds_last} "
            f"| {t.redis_first}→{t.redis_last} | {verdict or 'flat'} |"
        )
    return lines
