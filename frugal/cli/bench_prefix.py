"""`frugal bench prefix`: prefix-aware routing against least-request, wall clock (CLI shell)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from frugal.bench.prefix_bench import run_prefix_benchmark
from frugal.bench.prefix_plan import mooncake_replay
from frugal.bench.traces import MOONCAKE_CONVERSATION

DEFAULT_REQUESTS = 1000  # 330 s of the trace, 197 of them with a repeated prefix key
QUICK_REQUESTS = 200


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = benches.add_parser(
        "prefix",
        help="prefix-aware routing against least-request on the Mooncake trace (wall clock)",
        description="Replay the Mooncake trace, scaled down, through two fresh stacks of eight "
        "sim tp8 replicas with prefix caches: one routed by least-request inside the group, "
        "one by the prompt's prefix key (models[].prefix_routing); write prefix.json and "
        "prefix.md with the cache hits, TTFT and each replica's share.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REQUESTS} requests")
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument(
        "--time-scale", type=float, default=10.0, help="every simulated duration x this"
    )
    parser.add_argument(
        "--compression", type=float, default=4.0, help="the trace's arrival times / this"
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    requests = QUICK_REQUESTS if args.quick else args.requests
    if requests < 1:
        print("frugal bench prefix: --requests must be at least 1", file=sys.stderr)
        return 2
    if args.compression <= 0:
        print("frugal bench prefix: --compression must be positive", file=sys.stderr)
        return 2
    replay = mooncake_replay(MOONCAKE_CONVERSATION, requests, args.compression)
    outcomes = asyncio.run(
        run_prefix_benchmark(replay, args.out, args.time_scale, args.compression)
    )
    print((args.out / "prefix.md").read_text())
    return 0 if all(o.errors == 0 for o in outcomes) else 1
