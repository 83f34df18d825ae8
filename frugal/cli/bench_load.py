"""`frugal bench load`: an OpenAI-format load generator for any base URL (CLI shell).

Closed loop (c requests in flight, 10 x c requests or a duration), Poisson or Gamma
arrivals, or a replayed trace; streamed or unary; prints the paper's section 5.1 metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from dataclasses import asdict
from pathlib import Path

from frugal.bench.arrivals import gamma_offsets
from frugal.bench.driver import BenchRequest
from frugal.bench.http_driver import HttpDriver, Target
from frugal.bench.load import closed_loop, open_loop
from frugal.bench.load_report import summary_lines
from frugal.bench.progress import ProgressBar
from frugal.bench.stats import LevelSummary, summarise
from frugal.bench.trace import TraceScaling, filler_prompt, parse_trace, scale, window
from frugal.cli.interrupt import INTERRUPTED, until_signal

ARRIVALS = ("closed", "poisson", "gamma", "trace")
MAX_CONNECTIONS = 1024


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = benches.add_parser(
        "load",
        help="drive any OpenAI-compatible base URL and print TTFT, TBT, E2E, throughput",
        description="Closed loop by default: --concurrency requests in flight, 10 x that many "
        "in all (or --requests / --duration). --arrivals poisson|gamma sends --requests at "
        "--rate per second; --arrivals trace replays an Azure trace CSV.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the API's base URL")
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--key", default=os.environ.get("OPENAI_API_KEY", ""), help="API key ($OPENAI_API_KEY)"
    )
    parser.add_argument("--arrivals", choices=ARRIVALS, default="closed")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, help="in all (closed: 10 x concurrency)")
    parser.add_argument("--duration", type=float, help="closed loop: seconds instead of a count")
    parser.add_argument("--rate", type=float, default=4.0, help="poisson/gamma: requests per s")
    parser.add_argument("--cv", type=float, default=2.0, help="gamma: cv of the gaps (1 = Poisson)")
    parser.add_argument("--trace", type=Path, help="trace: an Azure LLM inference trace CSV")
    parser.add_argument("--trace-start", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt-words", type=int, default=64)
    parser.add_argument("--unary", action="store_true", help="non-streaming requests")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=main)


def schedule(args: argparse.Namespace) -> list[tuple[float, BenchRequest]]:
    """Open-loop send times and requests for poisson, gamma or trace arrivals."""
    count = args.requests or 100
    if args.arrivals == "trace":
        if args.trace is None:
            raise ValueError("--arrivals trace needs --trace FILE")
        with args.trace.open(newline="") as lines:
            replay = scale(window(parse_trace(lines), args.trace_start, count), TraceScaling())
        return [
            (r.at_s, BenchRequest(filler_prompt(r.prompt_words), r.max_tokens, i))
            for i, r in enumerate(replay)
        ]
    cv = 1.0 if args.arrivals == "poisson" else args.cv
    offsets = gamma_offsets(args.rate, cv, count, random.Random(args.seed))
    prompt = filler_prompt(args.prompt_words)
    return [(at, BenchRequest(prompt, args.max_tokens, i)) for i, at in enumerate(offsets)]


async def run(args: argparse.Namespace) -> LevelSummary:
    headers = {"authorization": f"Bearer {args.key}"} if args.key else {}
    target = Target(args.url.rstrip("/"), headers, args.model)
    stream = not args.unary
    if args.arrivals == "closed":
        total = args.requests or (None if args.duration else 10 * args.concurrency)
        progress = ProgressBar(f"c={args.concurrency}", total or 0)
        prompt = filler_prompt(args.prompt_words)
        async with HttpDriver(
            target, args.concurrency, stream=stream, timeout_s=args.timeout
        ) as driver:
            samples, duration = await closed_loop(
                driver, args.concurrency,
                lambda index: BenchRequest(prompt, args.max_tokens, args.seed * 100_003 + index),
                progress.advance, total=total, duration_s=args.duration,
            )  # fmt: skip
    else:
        planned = schedule(args)
        progress = ProgressBar(args.arrivals, len(planned))
        connections = min(MAX_CONNECTIONS, len(planned))
        async with HttpDriver(target, connections, stream=stream, timeout_s=args.timeout) as driver:
            samples, duration = await open_loop(driver, planned, progress.advance)
    progress.close()
    return summarise(samples, duration)


def main(args: argparse.Namespace) -> int:
    try:
        summary = asyncio.run(until_signal(run(args)))
    except (ValueError, OSError) as error:
        print(f"frugal bench load: {error}", file=sys.stderr)
        return 2
    if summary is None:
        return INTERRUPTED
    print(json.dumps(asdict(summary), indent=2) if args.json else "\n".join(summary_lines(summary)))
    return 0 if summary.requests > summary.errors else 1
