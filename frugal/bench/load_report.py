"""The summary `frugal bench load` prints (pure layer): the paper's section 5.1 metrics."""

from __future__ import annotations

from frugal.bench.stats import LevelSummary


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summary_lines(summary: LevelSummary) -> list[str]:
    ok = summary.requests - summary.errors
    reasons = ", ".join(f"{why}: {count}" for why, count in summary.error_reasons.items())
    return [
        f"requests      {summary.requests} ({ok} ok, {summary.errors} errors, "
        f"{summary.timeouts} timeouts) in {summary.duration_s:.1f} s",
        f"throughput    {summary.throughput_tok_s:.1f} generated tok/s, "
        f"{summary.requests_per_s:.2f} req/s",
        "              p50      p90      p99   (ms)",
        f"TTFT     {_ms(summary.ttft_p50_ms):>8} {_ms(summary.ttft_p90_ms):>8} "
        f"{_ms(summary.ttft_p99_ms):>8}",
        f"TBT      {_ms(summary.tbt_p50_ms):>8} {_ms(summary.tbt_p90_ms):>8} "
        f"{_ms(summary.tbt_p99_ms):>8}",
        f"E2E      {_ms(summary.e2e_p50_ms):>8} {_ms(summary.e2e_p90_ms):>8} "
        f"{_ms(summary.e2e_p99_ms):>8}",
        f"breakdown     e2e p50 {_ms(summary.e2e_p50_ms)} ms: engine p50 "
        f"{_ms(summary.engine_ms_p50)} ms, gateway p50 {_ms(summary.gateway_ms_p50)} ms "
        "(engine time as the worker reported it)",
        *([f"errors by reason  {reasons}"] if reasons else []),
    ]
