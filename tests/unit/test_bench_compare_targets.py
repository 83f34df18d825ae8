"""Issue 10's goals as `frugal bench compare` states them, and the table's sections on what
each Frugal stack spent (pure parts)."""

from __future__ import annotations

from typing import Any

import pytest

from frugal.bench.compare_records import REQUIRED_KEYS, USAGE_KEYS
from frugal.bench.compare_table import CompareHeader, render
from frugal.bench.compare_targets import REPORTED, safety_cpu_per_request, targets

HEADER = CompareHeader("2 CPUs", "2026-11-21", "4 sim workers", "closed loop")


def _record(system: str, concurrency: int, **values: Any) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(REQUIRED_KEYS + USAGE_KEYS)
    record.update(system=system, concurrency=concurrency, errors=0, throughput_tok_s=100.0)
    record.update(requests=20, error_reasons={})
    record.update(values)
    return record


def _usage(safety_us: float, *, processes: int = 1) -> dict[str, Any]:
    return {
        "processes": {"safety_filter": processes, "envoy": 1, "control_plane": 1, "redis": 1},
        "cpu_us_per_request": {"safety_filter": safety_us, "envoy": 400.0, "control_plane": 2.0},
        "cpu_us_per_token": {"safety_filter": safety_us / 64, "envoy": 6.25, "control_plane": 0.0},
        "python_messages_per_request": {
            "ext_authz": 1.0, "ratelimit": 1.0, "ext_proc": 4.0, "total": 6.0,
        },
        "redis_commands_per_request": 7.0,
        "redis_round_trips_per_request": 4.0,
    }  # fmt: skip


CHECK = {
    "system": "frugal",
    "idle_cpu_ms_per_s": {"safety_filter": 5.0, "envoy": 9.9, "control_plane": 39.7, "redis": 1.0},
    "before_engine": {
        "python": {"ext_authz": 1.0, "ratelimit": 1.0, "ext_proc": 2.0, "total": 4.0},
        "redis_round_trips": 3.0,
        "redis_commands": 5.0,
    },
    "after_engine": {
        "python": {"ext_authz": 0.0, "ratelimit": 0.0, "ext_proc": 2.0, "total": 2.0},
        "redis_round_trips": 1.0,
        "redis_commands": 2.0,
    },
    "ledger": {
        "matches": True,
        "ledger": {"prompt": 100, "completion": 200, "total": 300},
        "engines": {"prompt": 100, "completion": 200, "total": 300},
    },
}
RECORDS = [
    _record("direct", 1, ttft_p50_ms=10.0),
    _record("frugal", 1, ttft_p50_ms=19.9, **_usage(500.0)),
    _record("frugal-noredact", 1, ttft_p50_ms=11.2, **_usage(450.0)),
    _record("frugal-bare", 1, ttft_p50_ms=10.6, **_usage(90.0)),
    _record("frugal", 64, ttft_p50_ms=40.0, requests=60, **_usage(100.0)),
    _record("fastapi", 64, ttft_p50_ms=50.0),
    _record("frugal", 256, throughput_tok_s=900.0, requests=20, **_usage(300.0)),
    _record("fastapi", 256, throughput_tok_s=600.0),
    _record("litellm", 256, throughput_tok_s=200.0),
]


def _found(records: list[dict[str, Any]], checks: Any = (CHECK,), **kwargs: Any) -> dict[str, Any]:
    return {t.name.split(" (")[0]: t for t in targets(records, checks, **kwargs)}


def test_every_goal_of_issue_10_is_stated_with_its_value() -> None:
    found = _found(RECORDS)
    added = found[
        "TTFT p50 added by the full chain over frugal-bare at 1 stream, output redaction off"
    ]
    assert (added.measured, added.met) == ("+0.60 ms", True)
    hold_back = found["output redaction hold-back at 1 stream"]
    assert (hold_back.goal, hold_back.measured, hold_back.met) == (REPORTED, "+8.70 ms", None)
    ttft = found["TTFT p50 at 64 streams vs FastAPI"]
    assert (ttft.measured, ttft.met) == ("40.0 vs 50.0 (0.80x)", True)
    assert found["throughput at 256 streams vs FastAPI"].measured == "900.0 vs 600.0 (1.50x)"
    litellm = found["throughput at 256 streams vs LiteLLM with its key and rate limits on"]
    assert (litellm.measured, litellm.met) == ("900.0 vs 200.0 (4.50x)", False)
    assert found["errors of the full chain, every level"].measured == "0 of 100 requests"
    # (500 x 20 + 100 x 60 + 300 x 20) / 100 requests
    cpu = found["safety filter CPU per request"]
    assert (cpu.measured, cpu.met) == ("220 us (1 processes)", True)
    trips = found["before the engine"]
    assert trips.measured == "Python 4 (ext_authz 1, ratelimit 1, ext_proc 2), Redis 3"
    assert trips.met is False
    ledger = found["ledger == engines"]
    assert (ledger.measured, ledger.met) == ("yes (ledger 300 tokens, engines 300)", True)
    assert not any(name.startswith("long prompts") for name in found)


def test_errors_are_counted_by_reason_and_miss_the_target() -> None:
    records = [*RECORDS, _record("frugal", 512, errors=3, requests=40,
                                 error_reasons={"http 503 service_unavailable": 3})]  # fmt: skip
    errors = _found(records)["errors of the full chain, every level"]
    assert errors.measured == "3 of 140 requests (http 503 service_unavailable: 3)"
    assert errors.met is False


def test_long_prompt_targets_compare_the_full_chain_with_direct_grpc() -> None:
    records = [
        _record("direct", 20, ttft_p50_ms=5.0), _record("frugal", 20, ttft_p50_ms=16.0),
        _record("direct", 150, ttft_p50_ms=50.0), _record("frugal", 150, ttft_p50_ms=150.0),
    ]  # fmt: skip
    found = _found(records, long_prompts=True)
    at_20 = found["long prompts: TTFT p50 added over direct gRPC at 20 streams"]
    assert (at_20.goal, at_20.measured, at_20.met) == ("<= 15 ms", "+11.00 ms", True)
    at_150 = found["long prompts: TTFT p50 added over direct gRPC at 150 streams"]
    assert (at_150.goal, at_150.met) == ("<= 120 ms", True)


def test_targets_not_measured_say_so() -> None:
    found = targets([_record("direct", 1)])
    assert {t.met for t in found} == {None}
    assert {t.measured for t in found} == {"not measured"}


def test_cpu_per_request_weighs_each_level_by_its_requests() -> None:
    assert safety_cpu_per_request(RECORDS) == pytest.approx(220.0)
    assert safety_cpu_per_request(RECORDS, "frugal-bare") == pytest.approx(90.0)
    assert safety_cpu_per_request([_record("fastapi", 1)], "fastapi") is None


def test_the_table_shows_targets_cpu_round_trips_the_ledger_and_errors() -> None:
    records = [*RECORDS, _record("fastapi", 1, errors=2, error_reasons={"http 429": 2})]
    text = render(records, HEADER, [CHECK])
    assert "| TTFT p50 at 64 streams vs FastAPI (ms) | <= 1x | 40.0 vs 50.0 (0.80x) | met |" in text
    assert "| - | +8.70 ms | reported |" in text
    assert "mean gap between content events, less its shortest gap" in text
    # CPU columns are the Frugal systems only; [n] is the number of safety filter processes.
    assert "| streams | frugal | frugal-noredact | frugal-bare |" in text
    assert "| 1 | 500 / 7.8 [1] | 450 / 7.0 [1] | 90 / 1.4 [1] |" in text
    assert "| 1 | 1.00 + 1.00 + 4.00 = 6.00 |" in text
    assert "| 1 | 4.00 / 7.00 |" in text
    idle = "- `frugal`: safety filter 5.0 ms/s, Envoy 9.9 ms/s, control plane 39.7 ms/s, Redis 1.0"
    assert idle in text
    assert "### Redis" in text
    assert "- `frugal` ledger == engines: yes (ledger 300 tokens, engines 300)" in text
    before = (
        "- `frugal` before the engine: Python 4 round trips (ext_authz 1, ratelimit 1, "
        "ext_proc 2); Redis 3 round trips, 5 commands"
    )
    assert before in text
    assert "- fastapi at 1 streams: http 429: 2" in text
    assert "`litellm` LiteLLM's proxy" in text and "rpm 1,000,000" in text
