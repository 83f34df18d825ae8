"""The wall-clock prefix benchmark's plan and figures (frugal.bench.prefix_plan,
frugal.bench.prefix_bench's pure parts)."""

from __future__ import annotations

import itertools
import json

import pytest

from control_plane.model import FrugalConfig
from frugal.bench.fleet import TP8
from frugal.bench.ports import PortPicker
from frugal.bench.prefix_bench import outcome, render
from frugal.bench.prefix_plan import (
    BLOCK_CHARS,
    BLOCK_TOKENS,
    MAX_TOKENS,
    REPLICAS,
    block_words,
    mooncake_replay,
    prefix_config,
    prefix_ports,
)
from frugal.bench.stats import RequestSample
from frugal.bench.traces import MOONCAKE_CONVERSATION
from frugal.prefix_key import prefix_key


def mooncake_trace_end(requests: int) -> float:
    """Seconds from the trace's first request to its `requests`-th."""
    lines = MOONCAKE_CONVERSATION.read_text().splitlines()
    first, last = (float(json.loads(lines[i])["timestamp"]) for i in (0, requests - 1))
    return (last - first) / 1e3


def test_a_block_is_always_the_same_words_of_the_same_width() -> None:
    assert block_words(7) == block_words(7) != block_words(8)
    assert len(" ".join(block_words(123)) + " ") == BLOCK_CHARS
    assert len(block_words(0)) == BLOCK_TOKENS


def test_the_replay_keeps_the_traces_shared_prefixes_and_times() -> None:
    replay = mooncake_replay(MOONCAKE_CONVERSATION, 200, compression=4.0)
    assert len(replay) == 200 and replay[0].at_s == 0.0
    assert replay[-1].at_s == pytest.approx(mooncake_trace_end(200) / 4)
    assert all(a.at_s <= b.at_s for a, b in itertools.pairwise(replay))
    assert all(1 <= r.max_tokens <= MAX_TOKENS for r in replay)
    # The trace's first two requests share block 0 only: their words agree that far.
    first, second = replay[0].prompt.split(), replay[1].prompt.split()
    assert first[:BLOCK_TOKENS] == second[:BLOCK_TOKENS]
    assert first[BLOCK_TOKENS] != second[BLOCK_TOKENS]
    # Equal leading blocks, equal router keys, at the benchmark's block size.
    keys = [prefix_key(["user", r.prompt], BLOCK_CHARS) for r in replay]
    assert len(set(keys)) < len(keys)


@pytest.mark.parametrize("inside", ["least_request", "prefix"])
def test_each_run_is_a_valid_config_with_prefix_caches(inside: str) -> None:
    data = prefix_config(inside, prefix_ports(PortPicker()), time_scale=10.0, redis_dir="r")
    config = FrugalConfig.model_validate(data)
    (model,) = config.models
    assert (model.prefix_routing is not None) == (inside == "prefix")
    assert [len(g.replicas) for g in model.groups] == [REPLICAS]
    assert config.profiles[TP8]["prefix_block_tokens"] == BLOCK_TOKENS
    assert config.safety_filter.prefix_block_chars == BLOCK_CHARS
    with pytest.raises(ValueError, match="unknown routing"):
        prefix_config("random", prefix_ports(PortPicker()), time_scale=1.0, redis_dir="r")


def test_the_figures_come_from_the_engines_counters_and_the_goals_are_judged() -> None:
    samples = [RequestSample(ok=True, ttft_ms=t, tokens=4) for t in (10.0, 20.0, 30.0)]
    counters = ("frugal_engine_prefix_cache_queried_tokens_total",
                "frugal_engine_prefix_cache_hit_tokens_total")  # fmt: skip
    before = [dict.fromkeys(counters, 0.0)] * 2
    least = outcome("least_request", samples, 1.0, (before, [
        dict(zip(counters, (100.0, 10.0), strict=True)),
        dict(zip(counters, (100.0, 10.0), strict=True))]), [2.0, 2.0])  # fmt: skip
    prefix = outcome("prefix", samples[:2], 1.0, (before, [
        dict(zip(counters, (100.0, 40.0), strict=True)),
        dict(zip(counters, (100.0, 20.0), strict=True))]), [3.0, 1.0])  # fmt: skip
    assert (least.hit_rate, least.load_ratio) == (0.1, 1.0)
    assert (prefix.hit_rate, prefix.load_ratio) == (0.3, 1.5)
    table = render([least, prefix], ["# t"])
    assert "Hit rate 3.00x least-request's (goal >= 1.5: met)" in table
    assert "busiest replica <= 1.25x the mean: **missed**" in table
