"""`frugal bench routing`: the ScaleLLM section-6 routing benchmark (CLI shell, wiring only)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Literal

from frugal.bench.fleet import POLICIES
from frugal.bench.plan import (
    DEFAULT_TRACE_REQUESTS,
    DEFAULT_TRACE_START,
    QUICK_TRACE_REQUESTS,
    QUICK_TRACE_START,
    RoutingPlan,
    TracePlan,
    levels_from,
)
from frugal.bench.routing import BenchmarkFailed, run_routing_benchmark
from frugal.bench.trace import TraceScaling
from frugal.bench.traces import AZURE_CODE
from frugal.cli import (
    bench_compare,
    bench_engine,
    bench_load,
    bench_prefix,
    bench_soak,
    bench_virtual,
)
from frugal.cli.interrupt import run_benchmark

DEFAULT_TRACE = AZURE_CODE


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _policy_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown policies {unknown}; known: {list(POLICIES)}")
    return names


def _trace_start(text: str) -> int | Literal["busiest"]:
    return "busiest" if text == "busiest" else int(text)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks on a simulated fleet")
    benches = parser.add_subparsers(required=True, metavar="BENCHMARK")
    routing = benches.add_parser(
        "routing",
        help="1 x tp8 vs 4 x tp2 under four routing policies (ScaleLLM section 6)",
        description="Start one stack per routing policy on a simulated heterogeneous fleet, "
        "drive it with closed-loop streams and a replayed trace, and write routing.json, "
        "routing.md and routing.png.",
    )
    routing.add_argument("--out", type=Path, required=True, help="directory for the results")
    routing.add_argument("--quick", action="store_true", help="loads 1, 16, 64 and a short trace")
    routing.add_argument(
        "--time-scale", type=float, default=10.0,
        help="multiply every simulated duration (default 10); simulated ms = wall ms / this",
    )  # fmt: skip
    routing.add_argument(
        "--policies", type=_policy_list, default=list(POLICIES),
        help=f"comma-separated subset of {','.join(POLICIES)}",
    )  # fmt: skip
    routing.add_argument("--levels", type=_int_list, help="concurrencies, e.g. 1,4,16")
    routing.add_argument(
        "--requests-per-client", type=int, help="for every level (default: per-level counts)"
    )
    routing.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="Azure trace CSV")
    routing.add_argument(
        "--trace-requests", type=int,
        help=f"window size; 0: no replay (default {DEFAULT_TRACE_REQUESTS}, "
        f"quick {QUICK_TRACE_REQUESTS})",
    )  # fmt: skip
    routing.add_argument(
        "--trace-start", type=_trace_start,
        help="index of the window's first request, or 'busiest' "
        f"(default {DEFAULT_TRACE_START}, quick {QUICK_TRACE_START})",
    )  # fmt: skip
    routing.add_argument(
        "--trace-compression", type=float, default=10.0,
        help="trace seconds per wall second between arrivals (default 10)",
    )  # fmt: skip
    routing.add_argument("--trace-prompt-divisor", type=int, default=16)
    routing.add_argument("--trace-prompt-cap", type=int, default=256)
    routing.add_argument("--trace-output-scale", type=float, default=1.0)
    routing.add_argument("--trace-output-cap", type=int, default=64)
    routing.set_defaults(handler=main)
    bench_compare.add_parser(benches)
    bench_engine.add_parser(benches)
    bench_load.add_parser(benches)
    bench_soak.add_parser(benches)
    bench_virtual.add_parser(benches)
    bench_prefix.add_parser(benches)


def plan_from(args: argparse.Namespace) -> RoutingPlan:
    default_requests = QUICK_TRACE_REQUESTS if args.quick else DEFAULT_TRACE_REQUESTS
    requests = default_requests if args.trace_requests is None else args.trace_requests
    default_start = QUICK_TRACE_START if args.quick else DEFAULT_TRACE_START
    start = default_start if args.trace_start is None else args.trace_start
    scaling = TraceScaling(
        compression=args.trace_compression,
        prompt_divisor=args.trace_prompt_divisor,
        prompt_cap=args.trace_prompt_cap,
        output_scale=args.trace_output_scale,
        output_cap=args.trace_output_cap,
    )
    trace = TracePlan(args.trace, requests, start, scaling) if requests > 0 else None
    return RoutingPlan(
        policies=tuple(args.policies),
        levels=levels_from(args.levels, args.requests_per_client, quick=args.quick),
        trace=trace,
        time_scale=args.time_scale,
    )


def main(args: argparse.Namespace) -> int:
    try:
        plan = plan_from(args)
    except ValueError as error:
        print(f"frugal bench: {error}", file=sys.stderr)
        return 2
    if plan.trace is not None and not plan.trace.path.is_file():
        print(f"frugal bench: no trace at {plan.trace.path}", file=sys.stderr)
        return 2
    outputs = [args.out / name for name in ("routing.json", "routing.md", "routing.png")]
    work = run_routing_benchmark(plan, args.out)
    return run_benchmark("frugal bench", work, outputs, (BenchmarkFailed,))
