"""`frugal bench compare`'s pure parts: the plan, the records, the table and its targets."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from control_plane.model import FrugalConfig
from frugal.bench.compare_fleet import (
    BARE,
    FULL,
    NOREDACT,
    RLS,
    VARIANTS,
    GatewayPorts,
    frugal_config,
    litellm_config,
    rate_limit_setting_exists,
    sim_profile,
)
from frugal.bench.compare_plan import (
    DEFAULT_LEVELS,
    DEFAULT_SYSTEMS,
    QUICK_LEVELS,
    SYSTEMS,
    ComparePlan,
    plan_for,
)
from frugal.bench.compare_prompts import build_prompt, words_for_bytes
from frugal.bench.compare_records import (
    EXTRA_KEYS,
    REQUIRED_KEYS,
    USAGE_KEYS,
    build_record,
    problems,
)
from frugal.bench.compare_systems import SYSTEMS as RUNNERS
from frugal.bench.compare_table import CompareHeader, render
from frugal.bench.stats import RequestSample, summarise
from frugal.bench.trace import filler_prompt
from frugal.cli import bench, bench_compare
from frugal.content_checks import DEFAULT_POLICY, scan
from frugal.wire import DEFAULT_ENGINE_PORT

HEADER = CompareHeader("2 CPUs", "2026-11-21", "4 sim workers", "closed loop")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    return parser.parse_args(["bench", "compare", "--out", "results", *argv])


def _record(system: str, concurrency: int, **values: Any) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(REQUIRED_KEYS)
    record.update(system=system, concurrency=concurrency, errors=0, throughput_tok_s=100.0)
    record.update(values)
    return record


def test_every_planned_system_has_a_runner_and_the_default_plan_runs_them_all() -> None:
    assert set(SYSTEMS) == set(RUNNERS)
    plan = bench_compare.plan_from(_args())
    assert plan.systems == DEFAULT_SYSTEMS
    # frugal-rls needs `safety_filter.rate_limit`; until the config has it, it is left out.
    assert ("frugal-rls" in DEFAULT_SYSTEMS) == rate_limit_setting_exists()
    assert set(SYSTEMS) - set(DEFAULT_SYSTEMS) <= {"frugal-rls"}
    assert plan.levels == DEFAULT_LEVELS == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert plan.stream and plan.simulated


def test_the_paper_mode_sends_ten_requests_per_stream_with_a_floor() -> None:
    plan = plan_for(SYSTEMS, None, quick=False)
    assert plan.requests_at(256) == 2560
    assert plan.requests_at(1) == 20  # the floor keeps low levels' percentiles meaningful
    assert plan_for(SYSTEMS, (4,), quick=False, duration_s=5.0).requests_at(4) == 0


def test_quick_mode_is_ci_sized_and_options_override_it() -> None:
    plan = bench_compare.plan_from(_args("--quick", "--max-tokens", "8", "--unary"))
    assert plan.levels == QUICK_LEVELS
    assert plan.max_tokens == 8
    assert not plan.stream
    assert sum(plan.requests_at(c) for c in plan.levels) < 300


def test_external_engines_replace_the_sim_workers() -> None:
    engines = (f"10.0.0.5:{DEFAULT_ENGINE_PORT}", f"10.0.0.6:{DEFAULT_ENGINE_PORT}")
    plan = bench_compare.plan_from(_args("--engines", ",".join(engines)))
    assert plan.engines == engines
    assert not plan.simulated


@pytest.mark.parametrize(
    "fields",
    [{"systems": ()}, {"systems": ("nginx",)}, {"levels": (0,)}, {"max_tokens": 1},
     {"time_scale": 0.0}, {"duration_s": -1.0}, {"prompt_bytes": 0},
     {"safety_processes": 0}],
)  # fmt: skip
def test_a_bad_plan_is_refused(fields: dict[str, Any]) -> None:
    values: dict[str, Any] = {"systems": ("direct",), "levels": (1,), **fields}
    with pytest.raises(ValueError):
        ComparePlan(**values)


def test_long_prompts_with_sensitive_values_from_the_command_line() -> None:
    plan = bench_compare.plan_from(
        _args("--prompt-bytes", "200000", "--sensitive", "--levels", "20,150")
    )
    assert plan.long_prompts and plan.sensitive and plan.levels == (20, 150)
    prompt = plan.prompt()
    assert 190_000 < len(prompt.encode()) < 210_000
    assert "jane.doe@example.com" in prompt
    assert "~200,000-byte prompt with an email, a phone and a card number" in plan.describe()
    short = bench_compare.plan_from(_args("--prompt-bytes", "2000", "--safety-processes", "3"))
    assert not short.long_prompts and not short.sensitive
    assert short.safety_processes == 3
    assert "3 safety filter processes" in short.describe()
    assert bench_compare.plan_from(_args()).prompt() == filler_prompt(64)


def test_each_frugal_variant_is_a_valid_config_that_differs_only_in_its_safety_filter() -> None:
    ports = GatewayPorts(8080, 18000, 9901, 50051, 9500, 8081, 6379)
    engines = ("127.0.0.1:50061", "127.0.0.1:50062")
    configs = {}
    for name in (FULL, NOREDACT, BARE):
        data = frugal_config(
            "m", engines, ports, VARIANTS[name], time_scale=1.0, redis_dir="/tmp/r",
            safety_processes=2, max_request_bytes=4 << 20,
        )  # fmt: skip
        configs[name] = FrugalConfig.model_validate(data)
    full, noredact, bare = configs[FULL], configs[NOREDACT], configs[BARE]
    assert full.safety_filter.enforce and full.safety_filter.content_policy == {}
    assert noredact.safety_filter.content_policy == {"check_output": False}
    assert not bare.safety_filter.enforce
    assert full.safety_filter.ports() == [50051, 50052]
    assert full.listener.max_request_bytes == 4 << 20
    assert full.models == noredact.models == bare.models
    rls = frugal_config("m", engines, ports, VARIANTS[RLS], time_scale=1.0, redis_dir="/tmp/r")
    assert rls["safety_filter"]["rate_limit"] == "envoy"
    if rate_limit_setting_exists():
        safety_filter = FrugalConfig.model_validate(rls).safety_filter.model_dump()
        assert safety_filter["rate_limit"] == "envoy"


def test_long_prompts_get_a_near_instant_prefill_and_litellm_has_its_limits_on() -> None:
    assert sim_profile(1.0, long_prompts=True)["c_ms"] == 0.0
    assert sim_profile(1.0)["c_ms"] > 0
    config = litellm_config("m", "http://127.0.0.1:1/v1", "sk-x")
    (deployment,) = config["model_list"]
    assert deployment["litellm_params"]["rpm"] > 0 and deployment["litellm_params"]["tpm"] > 0
    assert config["router_settings"]["routing_strategy"] == "usage-based-routing-v2"
    assert config["general_settings"]["master_key"] == "sk-x"


def test_unknown_systems_are_refused_on_the_command_line() -> None:
    with pytest.raises(SystemExit):
        _args("--systems", "direct,nginx")


def test_a_record_has_exactly_the_contract_keys_and_the_extras() -> None:
    samples = [
        RequestSample(ok=True, ttft_ms=10, tbt_ms=2, tokens=8, e2e_ms=30, engine_ms=25),
        RequestSample(ok=True, ttft_ms=20, tbt_ms=4, tokens=8, e2e_ms=50, engine_ms=41),
        RequestSample(ok=False, timed_out=True),
    ]
    record = build_record("frugal", 64, summarise(samples, 2.0), cpu_busy=0.5)
    assert list(record)[: len(REQUIRED_KEYS)] == list(REQUIRED_KEYS)
    assert set(record) == set(REQUIRED_KEYS) | set(EXTRA_KEYS)
    assert set(USAGE_KEYS) <= set(EXTRA_KEYS)
    assert all(record[key] is None for key in USAGE_KEYS)  # no stack was read
    assert problems(record) == []
    assert record["errors"] == 1 and record["timeouts"] == 1
    assert record["throughput_tok_s"] == 8.0
    assert record["gateway_ms_p50"] == pytest.approx(7.0)  # medians of 5 and 9
    assert record["engine_ms_p50"] == pytest.approx(33.0)


def test_problems_names_what_is_wrong() -> None:
    found = problems({"system": "x", "concurrency": 0, "errors": "none", "surprise": 1})
    assert "missing key 'ttft_p50_ms'" in found
    assert "unknown key 'surprise'" in found
    assert "errors is not an int" in found
    assert any("concurrency" in p for p in found)


def test_the_table_has_a_row_per_level_a_column_per_system_and_ratios_to_fastapi() -> None:
    records = [
        _record("direct", 1, ttft_p50_ms=10.0, tbt_p50_ms=8.0, e2e_p50_ms=500.0,
                gateway_ms_p50=1.0, engine_ms_p50=499.0),
        _record("fastapi", 1, ttft_p50_ms=20.0, tbt_p50_ms=10.0, throughput_tok_s=50.0),
        _record("direct", 8, ttft_p50_ms=12.0, tbt_p50_ms=8.5, errors=2),
    ]  # fmt: skip
    text = render(records, HEADER)
    assert "| streams | direct | fastapi |" in text
    assert "| 1 | 10.0 / 8.00 (0.50 / 0.80) | 20.0 / 10.00 |" in text
    assert "| 1 | 100 (2.00) | 50 |" in text
    assert "| 1 | 500 = 1.0 + 499 | - = - + - |" in text
    assert "| 8 | 12.0 / 8.50, **2 errors** | - |" in text
    assert "- machine: 2 CPUs" in text


def test_sensitive_prompts_carry_what_the_default_policy_redacts_and_plain_ones_nothing() -> None:
    sensitive = build_prompt(400, sensitive=True)
    found = [match.category for match in scan(sensitive, DEFAULT_POLICY)]
    assert found == ["EMAIL", "PHONE", "CREDIT_CARD"]
    assert scan(build_prompt(400), DEFAULT_POLICY) == []
    assert sensitive.startswith(filler_prompt(100))
    assert words_for_bytes(200_000) > 30_000
