"""Goals the benchmarks judge, and how a verdict is written (pure layer)."""

from __future__ import annotations

WALL_THROUGHPUT_GOAL = 0.95  # the wall-clock benchmark: over the best static layout, every load
PREFIX_HIT_GOAL = 1.5  # prefix-aware routing's cache-hit rate over least-request's
PREFIX_LOAD_GOAL = 1.25  # no replica above this times its group's mean load


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def below(value: float | None, other: float | None, *, equal: bool = False) -> bool:
    """`value` under `other` (or equal to it, with `equal`); False when either is unknown."""
    if value is None or other is None:
        return False
    return value <= other if equal else value < other
