"""The sim engine's prefix cache (engine_workers.backends.prefix_cache)."""

from __future__ import annotations

import pytest

from engine_workers.backends.prefix_cache import PrefixCache
from engine_workers.backends.sim_model import SimProfile


def test_only_the_leading_run_of_cached_blocks_is_a_hit() -> None:
    cache = PrefixCache(capacity_blocks=10)
    assert cache.admit([1, 2, 3]) == 0
    assert cache.admit([1, 2, 3, 4]) == 3
    # Block 3 is cached, but after a miss its keys and values are not the ones needed.
    assert cache.admit([1, 9, 3]) == 1
    assert (cache.queried_blocks, cache.hit_blocks) == (10, 4)


def test_the_least_recently_used_blocks_leave_first() -> None:
    cache = PrefixCache(capacity_blocks=3)
    cache.admit([1, 2])
    cache.admit([3])
    cache.admit([1])  # 1 is now the most recent: 2 is the oldest
    cache.admit([4])
    assert len(cache) == 3
    assert cache.admit([2]) == 0
    assert cache.admit([1]) == 1


def test_no_capacity_caches_nothing() -> None:
    cache = PrefixCache(capacity_blocks=0)
    cache.admit([1])
    assert cache.admit([1]) == 0 and len(cache) == 0
    with pytest.raises(ValueError):
        PrefixCache(capacity_blocks=-1)


def test_the_kv_budget_bounds_the_cache() -> None:
    assert SimProfile(kv_budget_tokens=262_144, prefix_block_tokens=512).prefix_cache_blocks == 512
    assert SimProfile(kv_budget_tokens=262_144).prefix_cache_blocks == 0
