"""`frugal bench soak`: minutes of steady streams through the full chain (CLI shell)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import httpx

from frugal.bench.compare import CompareFailed
from frugal.bench.compare_systems import SystemFailed
from frugal.bench.soak import SoakPlan, run_soak
from frugal.cli.interrupt import INTERRUPTED, until_signal


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = benches.add_parser(
        "soak",
        help="hold streams through the full chain for minutes; sample every process's memory",
        description="Start sim engine workers and a full Frugal stack, hold --concurrency "
        "streams for --duration seconds, sample every process's RSS and open descriptors "
        "every --interval seconds, then check errors, the usage ledger and the trends.",
    )
    defaults = SoakPlan()
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--duration", type=float, default=defaults.duration_s, help="seconds")
    parser.add_argument("--interval", type=float, default=defaults.interval_s, help="seconds")
    parser.add_argument(
        "--warmup", type=float, default=defaults.warmup_s,
        help="seconds of samples left out of the trends",
    )  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    parser.add_argument("--out", type=Path, help="directory for samples.json and table.md")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    try:
        plan = SoakPlan(
            concurrency=args.concurrency, duration_s=args.duration, interval_s=args.interval,
            warmup_s=args.warmup, max_tokens=args.max_tokens,
        )  # fmt: skip
        result = asyncio.run(until_signal(run_soak(plan, args.out)))
    except (ValueError, OSError, CompareFailed, SystemFailed, httpx.HTTPError) as error:
        print(f"frugal bench soak: {error}", file=sys.stderr)
        return 2
    if result is None:
        return INTERRUPTED
    print("\n".join(result.lines()))
    return 0 if result.passed else 1
