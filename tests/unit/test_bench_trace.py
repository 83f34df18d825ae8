"""Routing benchmark trace replay: parsing the Azure CSV, windows, compression and scaling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from frugal.bench.trace import (
    TraceRequest,
    TraceScaling,
    busiest_start,
    filler_prompt,
    parse_timestamp,
    parse_trace,
    scale,
    window,
)
from frugal.bench.traces import AZURE_CODE, AZURE_CONVERSATION, MOONCAKE_CONVERSATION

CSV = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.9799600,4808,10
2023-11-16 18:17:04.0319600,3180,8
2023-11-16 18:17:05.0000000,8,0
2023-11-16 18:17:05.5000000,100000,500
2023-11-16 18:17:05.6000000,3200,20
"""


def test_timestamps_with_seven_fraction_digits_parse_to_seconds() -> None:
    first = parse_timestamp("2023-11-16 18:17:03.9799600")
    second = parse_timestamp("2023-11-16 18:17:04.0319600")
    assert second - first == pytest.approx(0.052, abs=1e-6)
    assert parse_timestamp("2023-11-16 18:17:04") - first == pytest.approx(0.02004, abs=1e-6)


def test_a_trace_becomes_offsets_from_its_first_request() -> None:
    requests = parse_trace(CSV.splitlines(keepends=True))
    assert len(requests) == 5
    assert requests[0] == TraceRequest(0.0, 4808, 10)
    assert requests[1].offset_s == pytest.approx(0.052, abs=1e-6)
    assert requests[4].offset_s == pytest.approx(1.62004, abs=1e-6)


def test_a_trace_without_the_expected_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="GeneratedTokens"):
        parse_trace(["TIMESTAMP,ContextTokens\n", "2023-11-16 18:17:03.1,5\n"])


def test_a_window_is_consecutive_requests_from_an_index() -> None:
    requests = parse_trace(CSV.splitlines(keepends=True))
    assert window(requests, 1, 2) == requests[1:3]
    assert window(requests, 3, 10) == requests[3:]
    with pytest.raises(ValueError):
        window(requests, 5, 1)


def test_the_busiest_window_is_the_shortest_span_of_that_many_requests() -> None:
    times = [0.0, 10.0, 10.5, 10.6, 20.0, 30.0]
    requests = [TraceRequest(t, 100, 10) for t in times]
    assert busiest_start(requests, 3) == 1
    assert window(requests, "busiest", 2) == requests[2:4]


def test_scaling_compresses_arrivals_and_scales_lengths_within_caps() -> None:
    requests = parse_trace(CSV.splitlines(keepends=True))
    scaling = TraceScaling(compression=10, prompt_divisor=16, prompt_cap=256, output_cap=64)
    replay = scale(window(requests, 1, 4), scaling)
    assert [r.at_s for r in replay] == pytest.approx([0.0, 0.096804, 0.146804, 0.156804], abs=1e-6)
    assert [r.prompt_words for r in replay] == [198, 1, 256, 200]  # 8 // 16 -> at least 1
    assert [r.max_tokens for r in replay] == [8, 1, 64, 20]  # 0 -> at least 1, 500 -> cap


def test_output_scale_multiplies_before_the_cap() -> None:
    requests = [TraceRequest(0.0, 1600, 10), TraceRequest(1.0, 1600, 50)]
    replay = scale(requests, TraceScaling(compression=2, output_scale=0.5, output_cap=20))
    assert [r.max_tokens for r in replay] == [5, 20]
    assert replay[1].at_s == 0.5


def test_the_scaling_says_what_it_did() -> None:
    text = TraceScaling(compression=10).describe()
    assert "compressed 10x" in text and "/ 16" in text and "64" in text


def test_filler_prompts_have_the_requested_number_of_words() -> None:
    assert len(filler_prompt(300).split()) == 300
    assert filler_prompt(3) == "the quick review"


@pytest.mark.parametrize("path", [AZURE_CODE, AZURE_CONVERSATION])
def test_the_shipped_azure_traces_parse_whole(path: Path) -> None:
    """The traces ship with the project (frugal bench routing's default), unchanged."""
    with path.open() as lines:
        requests = parse_trace(lines)
    assert len(requests) > 1_000
    assert all(r.context_tokens > 0 for r in requests)


def test_the_shipped_mooncake_trace_has_its_prefix_blocks() -> None:
    first = json.loads(MOONCAKE_CONVERSATION.read_text().splitlines()[0])
    assert {"timestamp", "input_length", "output_length", "hash_ids"} <= set(first)
    assert "licence" in (AZURE_CODE.parent / "README.md").read_text()
