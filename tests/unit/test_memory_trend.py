"""The soak run's verdict on memory and descriptors: growth is flagged, noise is not."""

from __future__ import annotations

import random

from frugal.bench.memory_trend import MIB, MemorySample, ProcessReading, render, trends


def _series(
    rss_mib: list[float], fds: list[int] | None = None, every_s: float = 10.0
) -> list[MemorySample]:
    fds = fds or [20] * len(rss_mib)
    return [
        MemorySample(i * every_s, {"engine 1": ProcessReading(int(mib * MIB), fd)})
        for i, (mib, fd) in enumerate(zip(rss_mib, fds, strict=True))
    ]


def test_a_steady_rise_grows() -> None:
    (found,) = trends(_series([100 + 0.5 * i for i in range(60)]), warmup_s=0)
    assert found.grows
    assert found.slope_mib_per_min > 2.9


def test_noise_around_a_flat_line_does_not_grow() -> None:
    rng = random.Random(7)
    (found,) = trends(_series([100 + rng.uniform(-4, 4) for _ in range(60)]), warmup_s=0)
    assert not found.grows
    assert not found.leaks_fds


def test_the_warm_up_is_left_out() -> None:
    filling = [50 + 10 * i for i in range(6)] + [110.0] * 54  # caches fill, then stay
    assert trends(_series(filling), warmup_s=0)[0].grows
    assert not trends(_series(filling), warmup_s=60)[0].grows


def test_descriptors_that_are_never_closed_leak() -> None:
    (found,) = trends(_series([100.0] * 30, [20 + 3 * i for i in range(30)]), warmup_s=0)
    assert found.leaks_fds and not found.grows
    assert "leaks fds" in render([found])[-1]


def test_a_process_seen_in_fewer_than_three_samples_has_no_trend() -> None:
    samples = _series([100.0] * 5)
    samples[0].processes["envoy 2"] = ProcessReading(MIB, 1)
    assert [t.process for t in trends(samples, warmup_s=0)] == ["engine 1"]


def test_redis_connections_a_pool_opens_are_not_a_descriptor_leak() -> None:
    samples = [
        MemorySample(i * 10.0, {"safety_filter 1": ProcessReading(100 * MIB, 40 + 3 * i, 3 * i)})
        for i in range(30)
    ]
    (found,) = trends(samples, warmup_s=0)
    assert not found.leaks_fds
    assert (found.fds_first, found.fds_last) == (40, 40)
    assert (found.redis_first, found.redis_last) == (0, 87)
