"""routing.md: the routing benchmark's records as markdown tables (pure layer)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from frugal.bench.fleet import DYNAMIC_POLICY, JUDGED_POLICIES, STATIC_POLICIES
from frugal.bench.goals import WALL_THROUGHPUT_GOAL, below, met
from frugal.bench.records import TRACE_LOAD, Load


@dataclass(frozen=True)
class ReportHeader:
    machine: str  # e.g. "2 CPUs, AMD EPYC"
    date: str
    time_scale: float
    trace: str  # how the trace was windowed, compressed and scaled ("" when not replayed)
    levels: str  # how many requests each closed-loop level ran


def _policies(records: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(str(r["policy"]) for r in records))


def _loads(records: Sequence[dict[str, Any]]) -> list[Load]:
    concurrencies = sorted({r["load"] for r in records if r["load"] != TRACE_LOAD})
    has_trace = any(r["load"] == TRACE_LOAD for r in records)
    return [*concurrencies, *([TRACE_LOAD] if has_trace else [])]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _cell(record: dict[str, Any] | None, suffix: str) -> str:
    if record is None:
        return "-"
    text = (
        f"{record[f'throughput_tok_s{suffix}']:.0f} tok/s, "
        f"{_ms(record[f'ttft_p50_ms{suffix}'])} / {_ms(record[f'ttft_p99_ms{suffix}'])} ms"
    )
    share = record.get("group_share") or {}
    if "tp8" in share:
        text += f", tp8 {share['tp8']:.0%}"
    if record["errors"]:
        text += f", **{record['errors']} errors**"
    return text


def adaptive_ratio(
    by_policy: dict[str, dict[str, Any]], suffix: str = "", policy: str = DYNAMIC_POLICY
) -> str:
    """`policy`'s throughput over the better static layout's at one load ("-" if either
    is missing)."""
    statics = [by_policy[p] for p in STATIC_POLICIES if p in by_policy]
    if policy not in by_policy or not statics:
        return "-"
    best = max(r[f"throughput_tok_s{suffix}"] for r in statics)
    if best <= 0:
        return "-"
    return f"{by_policy[policy][f'throughput_tok_s{suffix}'] / best:.2f}"


def routing_table(records: Sequence[dict[str, Any]], *, simulated: bool = False) -> list[str]:
    """Rows: loads; columns: policies. Cells: throughput, TTFT p50 / p99, tp8's share."""
    suffix = "_sim" if simulated else ""
    policies = _policies(records)
    judged = [p for p in JUDGED_POLICIES if p in policies] or [DYNAMIC_POLICY]
    index = {(r["policy"], r["load"]): r for r in records}
    lines = [
        "| load | " + " | ".join(policies) + " | "
        + " | ".join(f"{p} / best static" for p in judged) + " |",
        "|---|" + "---|" * len(policies) + "---:|" * len(judged),
    ]  # fmt: skip
    for load in _loads(records):
        by_policy = {p: index[(p, load)] for p in policies if (p, load) in index}
        cells = [_cell(by_policy.get(p), suffix) for p in policies]
        ratios = [adaptive_ratio(by_policy, suffix, p) for p in judged]
        lines.append(f"| {load} | " + " | ".join([*cells, *ratios]) + " |")
    return lines


def goal_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    """Each judged policy against the goals, on the wall clock: throughput at least
    WALL_THROUGHPUT_GOAL of the best static layout's at every closed load, and a trace TTFT
    p99 below both static layouts'."""
    index = {(r["policy"], r["load"]): r for r in records}
    policies = _policies(records)
    lines = []
    for policy in (p for p in JUDGED_POLICIES if p in policies):
        ratios = {}
        for load in _loads(records):
            by_policy = {p: index[(p, load)] for p in policies if (p, load) in index}
            ratio = adaptive_ratio(by_policy, policy=policy)
            if load != TRACE_LOAD and ratio != "-":
                ratios[load] = float(ratio)
        if ratios:
            worst = min(ratios, key=ratios.__getitem__)
            lines.append(
                f"- {policy}: throughput >= {WALL_THROUGHPUT_GOAL} x the best static layout's "
                f"at every load: lowest {ratios[worst]:.2f}, at {worst} streams: "
                f"{met(all(r >= WALL_THROUGHPUT_GOAL for r in ratios.values()))}"
            )
        trace = index.get((policy, TRACE_LOAD))
        statics = [index[(p, TRACE_LOAD)] for p in STATIC_POLICIES if (p, TRACE_LOAD) in index]
        if trace is not None and statics:
            p99 = trace["ttft_p99_ms"]
            others = " and ".join(_ms(r["ttft_p99_ms"]) for r in statics)
            ok = len(statics) == len(STATIC_POLICIES) and all(
                below(p99, r["ttft_p99_ms"]) for r in statics
            )
            lines.append(
                f"- {policy}: trace TTFT p99 below both static layouts': {_ms(p99)} ms "
                f"against {others}: {met(ok)}"
            )
    return lines


def trace_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """The trace replay per policy: TTFT p99 first (the tail is what bursts hurt)."""
    rows = [r for r in records if r["load"] == TRACE_LOAD]
    lines = [
        "| policy | TTFT p99 ms (sim) | TTFT p50 ms (sim) | TBT p50 ms (sim) | tok/s (sim) "
        "| requests | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {_ms(r['ttft_p99_ms'])} ({_ms(r['ttft_p99_ms_sim'])}) "
            f"| {_ms(r['ttft_p50_ms'])} ({_ms(r['ttft_p50_ms_sim'])}) "
            f"| {_ms(r['tbt_p50_ms'])} ({_ms(r['tbt_p50_ms_sim'])}) "
            f"| {r['throughput_tok_s']:.0f} ({r['throughput_tok_s_sim']:.0f}) "
            f"| {r['requests']} | {r['errors']} |"
        )
    return lines


def render(records: Sequence[dict[str, Any]], header: ReportHeader) -> str:
    lines = [
        "# Routing benchmark: one tp8 replica vs four tp2 replicas",
        "",
        f"- machine: {header.machine}",
        f"- date: {header.date}",
        f"- time scale: {header.time_scale:g} (every simulated duration x{header.time_scale:g}; "
        f"simulated ms = wall ms / {header.time_scale:g})",
        f"- closed loop: {header.levels}; streaming chat completions, max_tokens drawn from "
        "16/32/64",
        f"- trace: {header.trace or 'not replayed'}",
        "- safety chain off (`safety_filter.enforce: false`): routing is measured without "
        "keys, quotas or content checks",
        "- dynamic policies start from tp8 weight 100, tp2 0; where no balancer loop moves the "
        "weights they behave like static-tp8 (the tp8 share shows what each policy did)",
        "",
        "## Goals (wall time)",
        "",
        *goal_lines(records),
        "",
        "## Wall time",
        "",
        "Cells: throughput, TTFT p50 / p99, share of requests routed to tp8.",
        "",
        *routing_table(records),
        "",
        "## Simulated time",
        "",
        *routing_table(records, simulated=True),
    ]
    if any(r["load"] == TRACE_LOAD for r in records):
        lines += ["", "## Trace replay, per policy (wall, simulated in brackets)", ""]
        lines += trace_table(records)
    return "\n".join(lines) + "\n"
