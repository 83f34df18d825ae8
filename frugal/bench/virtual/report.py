"""The virtual-time comparison as tables, with the issue's goals met or missed (pure layer)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from frugal.bench.goals import PREFIX_HIT_GOAL, PREFIX_LOAD_GOAL, below, met, ms
from frugal.bench.virtual.compare import ADAPTIVE, LEAST_REQUEST, PREFIX, FleetResults, Outcome

THROUGHPUT_GOAL = 0.97  # adaptive over the best static layout, at every closed load
DECIDE_GOAL_MS = 10.0  # the balancer's CPU per decision at 1,000 replicas
UPDATE_GOAL_BYTES = 16 * 1024  # "an RDS change of a few kilobytes, not a full snapshot"


def _cell(outcome: Outcome) -> str:
    shares = " ".join(f"{k} {v:.0%}" for k, v in outcome.shares.items())
    return (
        f"{outcome.throughput_tok_s:,.0f} tok/s, TTFT {ms(outcome.ttft_p50_ms)} / "
        f"{ms(outcome.ttft_p99_ms)} ms ({shares})"
    )


def _judged(results: FleetResults) -> list[str]:
    """The policies held to the goals: `adaptive`, and the fleet's per-request-picked ones."""
    return [ADAPTIVE, *results.fleet.picked]


def _closed_table(results: FleetResults, policies: Sequence[str]) -> list[str]:
    fleet = results.fleet
    judged = _judged(results)
    ratios = " | ".join(f"{p} / best static | goal >= {THROUGHPUT_GOAL}" for p in judged)
    lines = [
        f"| load | {' | '.join(policies)} | {ratios} |",
        "|---|" + "---|" * len(policies) + "---:|---|" * len(judged),
    ]
    for level in fleet.levels:
        row = {o.policy: o for o in results.outcomes if o.load == str(level)}
        best = max(row[s].throughput_tok_s for s in fleet.statics if s in row)
        verdicts = []
        for policy in judged:
            ratio = row[policy].throughput_tok_s / best if policy in row and best else None
            shown = "-" if ratio is None else f"{ratio:.2f}"
            verdicts.append(f"{shown} | {'-' if ratio is None else met(ratio >= THROUGHPUT_GOAL)}")
        cells = " | ".join(_cell(row[p]) if p in row else "-" for p in policies)
        lines.append(f"| {level} | {cells} | {' | '.join(verdicts)} |")
    return lines


def _row(results: FleetResults, load: str) -> dict[str, Outcome]:
    """Each policy's outcome on one load."""
    return {o.policy: o for o in results.outcomes if o.load == load}


def _against_statics(
    results: FleetResults, row: Mapping[str, Outcome], policy: str
) -> tuple[float, float] | None:
    """(`policy`'s TTFT p99, the best static layout's) in one load's `row`, or None when a
    run is missing."""
    judged = row[policy].ttft_p99_ms if policy in row else None
    statics = [row[s].ttft_p99_ms for s in results.fleet.statics if s in row]
    if judged is None or not statics or any(s is None for s in statics):
        return None
    return judged, min(s for s in statics if s is not None)


def _trace_table(
    results: FleetResults, policies: Sequence[str], traces: Sequence[str]
) -> list[str]:
    judged = [p for p in _judged(results) if p in policies]
    goals = " | ".join(f"{p} p99 below every static" for p in judged)
    lines = [
        f"| trace | {' | '.join(policies)} | p99 bound | {goals} |",
        "|---|" + "---|" * len(policies) + "---:|" + "---|" * len(judged),
    ]
    verdicts = []
    for trace in traces:
        labels = results.windows.get(trace, [])
        for label in labels:
            row = _row(results, label)
            if not row:
                continue
            bound = results.ttft_bounds_ms.get(label)
            goal = " | ".join(_trace_verdict(results, row, p, bound) for p in judged)
            cells = " | ".join(_cell(row[p]) if p in row else "-" for p in policies)
            lines.append(f"| {label} | {cells} | {ms(bound)} ms | {goal} |")
        if len(labels) > 1:
            for policy in _judged(results):
                margins = _margins(results, labels, policy)
                if margins:
                    verdicts.append(_windows_verdict(trace, policy, margins))
    return [*lines, *(["", *verdicts] if verdicts else [])]


def _trace_verdict(
    results: FleetResults, row: Mapping[str, Outcome], policy: str, bound: float | None
) -> str:
    """`policy`'s p99 below both static layouts on one trace window, met or missed; a miss
    where the best layout is at the bound (within 0.5 ms) says so: no routing beats it."""
    pair = _against_statics(results, row, policy)
    if pair is None:
        return "-"
    at_bound = bound is not None and pair[1] <= pair[0] and pair[1] <= bound + 0.5
    return met(pair[0] < pair[1]) + (" (at the bound)" if at_bound else "")


def _margins(results: FleetResults, labels: Sequence[str], policy: str) -> list[float]:
    """`policy`'s TTFT p99 minus the best static layout's, per trace window."""
    pairs = [_against_statics(results, _row(results, label), policy) for label in labels]
    return [pair[0] - pair[1] for pair in pairs if pair is not None]


def _windows_verdict(trace: str, policy: str, margins: Sequence[float]) -> str:
    """The goal on a trace judged over its windows: `policy`'s p99 below both static
    layouts in every one; `margins` are its p99 minus the best layout's."""
    below_in = sum(1 for margin in margins if margin < 0)
    spread = f"{min(margins):+,.1f} to {max(margins):+,.1f} ms"
    return (
        f"{trace}: {policy}'s TTFT p99 below both static layouts in {below_in} of "
        f"{len(margins)} windows ({policy} minus the best layout: {spread}): "
        f"{met(below_in == len(margins))}"
    )


def _prefix_table(found: FleetResults) -> list[str]:
    """Least-request against prefix-aware routing, per policy, with the issue's goals."""
    lines = [
        "| policy | inside groups | cache hits | TTFT p50 / p99 | busiest replica / mean |",
        "|---|---|---:|---|---:|",
    ]
    verdicts = []
    for policy in found.fleet.policies:
        runs = {o.load.split(", ")[-1]: o for o in found.outcomes if o.policy == policy}
        for inside in (LEAST_REQUEST, PREFIX):
            o = runs[inside]
            lines.append(
                f"| {policy} | {inside} | {o.cache_hit_rate:.1%} | {ms(o.ttft_p50_ms)} / "
                f"{ms(o.ttft_p99_ms)} ms | {o.load_ratio:.2f} |"
            )
        least, prefix = runs[LEAST_REQUEST], runs[PREFIX]
        hits = prefix.cache_hit_rate / least.cache_hit_rate if least.cache_hit_rate else None
        verdicts.append(
            f"{policy}: hit rate {'-' if hits is None else f'{hits:.2f}x'} "
            f"(goal >= {PREFIX_HIT_GOAL}: {met(hits is not None and hits >= PREFIX_HIT_GOAL)}), "
            f"TTFT p50 lower: {met(below(prefix.ttft_p50_ms, least.ttft_p50_ms))}, "
            f"p99 no worse: {met(below(prefix.ttft_p99_ms, least.ttft_p99_ms, equal=True))}, "
            f"busiest replica <= {PREFIX_LOAD_GOAL}x the mean: "
            f"{met(prefix.load_ratio <= PREFIX_LOAD_GOAL)}"
        )
    return [*lines, "", *verdicts]


def render(results: Sequence[FleetResults], header: Sequence[str], traces: Sequence[str]) -> str:
    lines = [*header, ""]
    for found in results:
        fleet = found.fleet
        if not fleet.levels:
            lines += [
                f"## Prefix-aware routing, Mooncake trace: {fleet.name} "
                f"({fleet.replicas} replicas)",
                "",
                *_prefix_table(found),
                "",
            ]
            continue
        policies = [p for p in fleet.policies if any(o.policy == p for o in found.outcomes)]
        kinds = ", ".join(f"{g.name} x{g.replicas}" for g in fleet.groups[:4])
        more = f" and {len(fleet.groups) - 4} more groups" if len(fleet.groups) > 4 else ""
        lines += [
            f"## Fleet `{fleet.name}`: {fleet.replicas} replicas ({kinds}{more})",
            "",
            "Closed loops: throughput, TTFT p50 / p99, share of requests by profile.",
            "",
            *_closed_table(found, policies),
            "",
            "Traces (TTFT p50 / p99):",
            "",
            *_trace_table(found, policies, traces),
            "",
        ]
        adaptive = [o.decide_cpu_ms for o in found.outcomes if o.policy == ADAPTIVE]
        if adaptive:
            worst = max(adaptive)
            lines += [
                f"Adaptive's decision, CPU per tick (median of each run's ticks, worst run): "
                f"{worst:.3f} ms for {fleet.replicas} replicas in {len(fleet.groups)} groups; "
                f"goal <= {DECIDE_GOAL_MS:g} ms: {met(worst <= DECIDE_GOAL_MS)}",
                "",
            ]
        if found.update is not None:
            update = found.update
            small = update.changed_types == ("RouteConfiguration",)
            lines += [
                f"A change of every group's weight ({fleet.statics[0]} to {fleet.statics[1]}) "
                f"reaches Envoy as {', '.join(update.changed_types)} only: "
                f"{update.sotw_bytes / 1024:.1f} KiB over state-of-the-world ADS, "
                f"{update.delta_bytes / 1024:.1f} KiB over delta ADS; the full snapshot is "
                f"{update.full_bytes / 1024:.1f} KiB. Goal, an RDS change of a few KiB: "
                f"{met(small and update.delta_bytes <= UPDATE_GOAL_BYTES)}",
                "",
            ]
    return "\n".join(lines) + "\n"
