"""`frugal bench engine`: the full chain vs. the backend in-process (CLI shell, wiring only)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from control_plane.config_file import ConfigError, load_config
from frugal.bench.engine_compare import OUTPUTS, EngineBenchFailed, run_engine_compare
from frugal.bench.engine_plan import (
    DEFAULT_LEVELS,
    MAX_TOKENS,
    MIN_REQUESTS,
    REQUESTS_PER_STREAM,
    TEMPERATURE,
    EnginePlan,
    served_model,
)
from frugal.cli.interrupt import run_benchmark
from frugal.cli.stack import REPO_ROOT
from frugal.cli.up import check_profiles


def _ints(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = benches.add_parser(
        "engine",
        help="the first model of frugal.yaml through the full chain vs. its backend in-process",
        description="Run the first model of the config (its first replica group's profile) "
        "twice with the same closed-loop workload: its backend in this process, requests "
        "straight into generate; then a whole stack (Envoy, safety filter with keys and "
        "content checks, control plane, Redis, one engine worker) over HTTP. Prints and "
        "writes table.md and results.json.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument(
        "-c", "--config", type=Path, default=REPO_ROOT / "frugal.yaml",
        help="the frugal.yaml whose first model is measured (default: the repository's)",
    )  # fmt: skip
    parser.add_argument(
        "--levels", type=_ints, default=DEFAULT_LEVELS,
        help=f"concurrencies (default {','.join(map(str, DEFAULT_LEVELS))})",
    )  # fmt: skip
    parser.add_argument(
        "--requests-per-stream", type=int, default=REQUESTS_PER_STREAM,
        help=f"requests per level = this x concurrency (default {REQUESTS_PER_STREAM})",
    )  # fmt: skip
    parser.add_argument(
        "--min-requests", type=int, default=MIN_REQUESTS,
        help=f"at least this many per level (default {MIN_REQUESTS})",
    )  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    parser.add_argument("--temperature", type=float, default=TEMPERATURE)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.set_defaults(handler=main)


def plan_from(args: argparse.Namespace) -> EnginePlan:
    config = load_config(args.config)
    check_profiles(config)
    return EnginePlan(
        model=served_model(config),
        levels=args.levels,
        requests_per_stream=args.requests_per_stream,
        min_requests=args.min_requests,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        timeout_s=args.timeout,
    )


def main(args: argparse.Namespace) -> int:
    try:
        plan = plan_from(args)
    except (ConfigError, ValueError) as error:
        print(f"frugal bench engine: {error}", file=sys.stderr)
        return 2
    outputs = [args.out / name for name in OUTPUTS]
    work = run_engine_compare(plan, args.out)
    return run_benchmark("frugal bench engine", work, outputs, (EngineBenchFailed,))
