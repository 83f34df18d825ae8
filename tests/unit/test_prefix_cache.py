"""The sim engine's prefix cache (engine_workers.backends.prefix_cache) and its use by the
batch scheduler."""

from __future__ import annotations

import pytest

from engine_workers.backends.prefix_cache import PrefixCache, prompt_blocks
from engine_workers.backends.sim_batch import BatchScheduler
from engine_workers.backends.sim_model import SequenceState, SimProfile, generated_tokens


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


def test_prompt_blocks_name_whole_blocks_by_their_prefix() -> None:
    words = [f"w{i}" for i in range(10)]
    blocks = prompt_blocks(words, 4)
    assert len(blocks) == 2  # the last 2 words are not a whole block
    assert prompt_blocks([*words[:8], "other"], 4) == blocks
    changed = prompt_blocks(["x", *words[1:]], 4)
    assert changed[0] != blocks[0] and changed[1] != blocks[1]  # a block names its prefix
    assert prompt_blocks(words[:3], 4) == ()


def test_the_scheduler_prefills_only_what_the_cache_does_not_hold() -> None:
    profile = SimProfile(jitter=0.0, prefix_block_tokens=4, kv_budget_tokens=4096)
    batch = BatchScheduler(profile)
    blocks = prompt_blocks([f"w{i}" for i in range(10)], 4)
    for request_id in ("first", "second"):
        state = SequenceState(
            generated_tokens(1, 2), max_tokens=2, stops=(), fault_after_tokens=None
        )
        batch.submit(request_id, 10, state, blocks)
        prefill = batch.admit()
        while not batch.idle:
            batch.decode()
        assert prefill == (10 if request_id == "first" else 2)
    assert (batch.prefix_queried_tokens, batch.prefix_hit_tokens) == (16, 8)
