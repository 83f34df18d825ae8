"""`frugal bench routing-virtual`: every routing policy in virtual time (CLI shell)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from frugal.bench import machine
from frugal.bench.virtual.compare import (
    TRACES,
    FleetPlan,
    Outcome,
    VirtualPlan,
    large_fleet,
    paper_fleet,
    prefix_fleets,
    run_virtual,
)
from frugal.bench.virtual.report import render

QUICK_PAPER_LEVELS = (1, 16, 64, 256)
QUICK_LARGE_LEVELS = (256, 4096)
FLEETS = ("paper", "large", "prefix")


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = benches.add_parser(
        "routing-virtual",
        help="every routing policy on a simulated fleet in virtual time (paper's and 1,000 "
        "replicas)",
        description="Run the control plane's balancer policies, weight gate and load signals "
        "against a discrete-event model of the sim engines and of Envoy's routing, in "
        "virtual time (deterministic from --seed, no wall clock), on closed loops and the "
        "shipped traces, and prefix-aware routing against least-request on the Mooncake "
        "trace with prefix caches; write virtual.json and virtual.md.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--quick", action="store_true", help="fewer loads, shorter traces")
    parser.add_argument(
        "--fleets", default=",".join(FLEETS),
        help="comma-separated of paper, large, prefix (the prefix-aware routing runs)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trace-requests", type=int, default=2000)
    parser.add_argument(
        "--prefix-requests", type=int, default=4000,
        help="Mooncake requests for prefix-aware routing (quick: 1000)",
    )  # fmt: skip
    parser.set_defaults(handler=main)


def _fleets(names: str, quick: bool) -> tuple[FleetPlan, ...]:
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in FLEETS]
    if unknown or not chosen:
        raise ValueError(f"unknown fleets {unknown}; known: {list(FLEETS)}")
    build = {
        "paper": lambda: (paper_fleet(QUICK_PAPER_LEVELS) if quick else paper_fleet(),),
        "large": lambda: (large_fleet(QUICK_LARGE_LEVELS) if quick else large_fleet(),),
        "prefix": prefix_fleets,
    }
    return tuple(fleet for n in chosen for fleet in build[n]())


def _progress(outcome: Outcome) -> None:
    p99 = "-" if outcome.ttft_p99_ms is None else f"{outcome.ttft_p99_ms:,.0f} ms"
    print(
        f"{outcome.policy:>18} {outcome.load:>10}: {outcome.throughput_tok_s:>10,.0f} tok/s, "
        f"TTFT p99 {p99} ({outcome.wall_s:.1f} s here)",
        flush=True,
    )


def main(args: argparse.Namespace) -> int:
    try:
        fleets = _fleets(args.fleets, args.quick)
    except ValueError as error:
        print(f"frugal bench routing-virtual: {error}", file=sys.stderr)
        return 2
    requests = 500 if args.quick else args.trace_requests
    plan = VirtualPlan(
        fleets=tuple(f for f in fleets if f.levels),
        seed=args.seed,
        trace_requests=requests,
        prefix_fleets=tuple(f for f in fleets if not f.levels),
        prefix_requests=1000 if args.quick else args.prefix_requests,
    )
    started = time.perf_counter()
    results = run_virtual(plan, _progress)
    took = time.perf_counter() - started
    header = [
        "# Routing policies in virtual time (`frugal bench routing-virtual`)",
        "",
        f"Seed {plan.seed}; traces: the first {requests} requests of each "
        f"({', '.join(TRACES)}), at their own times and lengths"
        + "".join(
            f"; on fleet `{f.name}` also the next {f.trace_windows - 1} windows of as many, "
            "each replayed alone from an idle fleet"
            for f in plan.fleets
            if f.trace_windows > 1
        )
        + "".join(
            f"; on fleet `{f.name}` {f.trace_copies} copies of each at once, as many users "
            "(each copy's times shifted by a seeded offset)"
            for f in plan.fleets
            if f.trace_copies > 1
        )
        + (
            f"; prefix-aware routing: the first {plan.prefix_requests} of Mooncake's"
            if plan.prefix_fleets
            else ""
        )
        + f". The run took {took:.0f} s on {machine.describe_machine()}.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    records = [{"fleet": r.fleet.name, **o.as_dict()} for r in results for o in r.outcomes]
    (args.out / "virtual.json").write_text(json.dumps(records, indent=1) + "\n")
    table = render(results, header, list(TRACES))
    (args.out / "virtual.md").write_text(table)
    print(table)
    return 0
