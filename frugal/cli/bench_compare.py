"""`frugal bench compare`: Frugal vs direct gRPC vs the usual gateways (CLI shell, wiring only)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from frugal.bench.compare import OUTPUTS, CompareFailed, run_compare
from frugal.bench.compare_plan import DEFAULT_SYSTEMS, SYSTEMS, ComparePlan, plan_for
from frugal.cli.interrupt import run_benchmark


def _names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown systems {unknown}; known: {list(SYSTEMS)}")
    return names


def _ints(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))


def _addresses(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = benches.add_parser(
        "compare",
        help="the same workload through direct gRPC, Frugal (full chain, without output "
        "redaction, with Envoy's rate limit call, bare), FastAPI, LiteLLM",
        description="Start sim engine workers (or use --engines), then drive each system in "
        "turn at every concurrency level and write results.json, checks.json, table.md, "
        "throughput.png and latency_breakdown.png.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--quick", action="store_true", help="levels 1, 16, 64; fewer requests")
    parser.add_argument(
        "--systems",
        type=_names,
        default=DEFAULT_SYSTEMS,
        help=f"comma-separated subset of {','.join(SYSTEMS)} "
        f"(default: {','.join(DEFAULT_SYSTEMS)})",
    )
    parser.add_argument("--levels", type=_ints, help="concurrencies, e.g. 1,8,64,256")
    parser.add_argument(
        "--requests-per-stream", type=int, help="requests per level = this x concurrency (10)"
    )
    parser.add_argument("--duration", type=float, help="seconds per level instead of a count")
    parser.add_argument("--max-tokens", type=int, help="per request (64; quick 32)")
    parser.add_argument("--prompt-words", type=int, help="words in each prompt (64)")
    parser.add_argument(
        "--prompt-bytes", type=int,
        help="prompts of about this many bytes of plain words instead (from 100000: the "
        "long-prompt workload and its targets, e.g. 200000 at --levels 20,150)",
    )  # fmt: skip
    parser.add_argument(
        "--sensitive", action="store_true",
        help="each prompt also carries an email, a phone and a card number (the prompt "
        "checks redact them)",
    )  # fmt: skip
    parser.add_argument(
        "--safety-processes",
        type=int,
        help="safety filter processes per Frugal stack (2, as frugal.yaml)",
    )
    parser.add_argument("--unary", action="store_true", help="non-streaming requests")
    parser.add_argument(
        "--engines", type=_addresses,
        help="host:port of engine workers already running (any backend, e.g. a GPU "
        "machine's TensorRT-LLM workers); default: start sim workers",
    )  # fmt: skip
    parser.add_argument("--model", help="the engines' model name (sim-bench)")
    parser.add_argument("--replicas", type=int, help="sim workers to start (4)")
    parser.add_argument("--time-scale", type=float, help="of the sim workers (1)")
    parser.add_argument("--timeout", type=float, help="seconds per request (300)")
    parser.set_defaults(handler=main)


def plan_from(args: argparse.Namespace) -> ComparePlan:
    return plan_for(
        args.systems,
        args.levels,
        quick=args.quick,
        requests_per_stream=args.requests_per_stream,
        duration_s=args.duration,
        max_tokens=args.max_tokens,
        prompt_words=args.prompt_words,
        prompt_bytes=args.prompt_bytes,
        sensitive=args.sensitive or None,
        safety_processes=args.safety_processes,
        stream=False if args.unary else None,
        engines=args.engines,
        model=args.model,
        replicas=args.replicas,
        time_scale=args.time_scale,
        timeout_s=args.timeout,
    )


def main(args: argparse.Namespace) -> int:
    try:
        plan = plan_from(args)
    except ValueError as error:
        print(f"frugal bench compare: {error}", file=sys.stderr)
        return 2
    outputs = [args.out / name for name in OUTPUTS]
    work = run_compare(plan, args.out)
    return run_benchmark("frugal bench compare", work, outputs, (CompareFailed,))
