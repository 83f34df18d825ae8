"""`frugal status`: the gateway on one screen, redrawn every second, from the admin REST.

CLI layer (HTTP client only, through admin_client; `render_status` is pure).
  frugal status                 redraw every --interval seconds (default 1) until Ctrl-C
  frugal status --once          one frame, for scripts
  frugal status --json          the admin API's JSON (GET /admin/v1/status), once
Per model its balancer policy; per replica group its live route weight, replicas
(healthy / draining / total), requests in flight, requests and errors per second
over the control plane's window (10 s) and the error share; totals on top.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

import httpx

from frugal.cli.admin_client import CommandFailed, admin_headers, call, common_options
from frugal.keys.admin_token import AdminTokenError

STATUS = "/admin/v1/status"
WIDTH = 100
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen (ANSI; every terminal we target)

# Column: (title, width, align); the rows below follow this order.
COLUMNS = (
    ("MODEL / GROUP", 30, "<"),
    ("POLICY", 17, "<"),
    ("WEIGHT", 6, ">"),
    ("REPLICAS", 10, ">"),
    ("IN FLIGHT", 10, ">"),
    ("REQ/S", 7, ">"),
    ("ERR/S", 7, ">"),
    ("ERR %", 6, ">"),
)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _row(cells: tuple[str, ...]) -> str:
    return " ".join(
        f"{_fit(cell, width):{align}{width}}"
        for cell, (_, width, align) in zip(cells, COLUMNS, strict=True)
    ).rstrip()


def _rate(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _traffic_cells(part: Mapping[str, Any]) -> tuple[str, ...]:
    return (
        f"{part['in_flight']:.0f}",
        _rate(part["requests_per_s"], 1),
        _rate(part["errors_per_s"], 2),
        _share(part["error_share"]),
    )


def _replicas(groups: list[Mapping[str, Any]]) -> str:
    healthy = sum(g["replicas_healthy"] for g in groups)
    draining = sum(g["replicas_draining"] for g in groups)
    total = sum(g["replicas_total"] for g in groups)
    return f"{healthy}/{draining}/{total}"


def _summary(status: Mapping[str, Any]) -> list[str]:
    streams = status["envoy_streams"]
    envoy = (
        f"Envoy connected ({streams} ADS stream{'s' if streams != 1 else ''})"
        if status["envoy_connected"]
        else "Envoy NOT connected (no ADS stream)"
    )
    age = status["stats_age_s"]
    counters = "counters not read yet" if age is None else f"counters read {age:.1f} s ago"
    totals = status["totals"]
    errors = _rate(totals["errors_per_s"], 2)
    share = _share(totals["error_share"])
    follower = "" if status["balancer_leader"] else " (weights from the balancer leader)"
    return [
        f"{envoy}   config #{status['config_generation']}{follower}   {counters}   "
        f"rates over {status['window_s']:.0f} s",
        f"{totals['models']} models, {totals['groups']} groups   "
        f"{totals['in_flight']:.0f} in flight   {_rate(totals['requests_per_s'], 1)} req/s   "
        f"{errors} errors/s ({share} %)",
    ]


def render_status(status: Mapping[str, Any], width: int = WIDTH) -> list[str]:
    """One frame of `frugal status` from the JSON of GET /admin/v1/status; no line is
    longer than `width`."""
    lines = [*_summary(status), "", _row(tuple(title for title, _, _ in COLUMNS))]
    for model in status["models"]:
        groups = model["groups"]
        lines.append(_row((model["name"], model["policy"], "", _replicas(groups),
                           *_traffic_cells(model))))  # fmt: skip
        for group in groups:
            lines.append(_row((f"  {group['name']}", "", str(group["weight"]),
                               _replicas([group]), *_traffic_cells(group))))  # fmt: skip
    if not status["models"]:
        lines.append("(no models configured)")
    lines += ["", "REPLICAS: healthy/draining/total   ERR: 5xx answers and gRPC error statuses"]
    return [_fit(line, width) for line in lines]


def _fetch(client: httpx.Client) -> dict[str, Any]:
    return call(client, "GET", STATUS)


def _watch(client: httpx.Client, interval: float, first: dict[str, Any]) -> int:
    """Redraw until Ctrl-C; a failed refresh keeps the last frame under a warning line."""
    answer, problem = first, ""
    try:
        while True:
            lines = render_status(answer)
            if problem:
                lines = [_fit(f"! {problem} (retrying)", WIDTH), *lines]
            sys.stdout.write(CLEAR + "\n".join(lines) + "\n")
            sys.stdout.flush()
            time.sleep(interval)
            try:
                answer, problem = _fetch(client), ""
            except CommandFailed as error:
                problem = str(error)
    except KeyboardInterrupt:
        return 0


def main(args: argparse.Namespace) -> int:
    try:
        headers = admin_headers(args)
    except AdminTokenError as error:
        print(f"frugal status: {error}", file=sys.stderr)
        return 2
    with httpx.Client(base_url=args.admin_url, headers=headers, timeout=5.0) as client:
        try:
            answer = _fetch(client)
        except CommandFailed as error:
            print(f"frugal status: {error}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(answer, indent=2), flush=True)
            return 0
        if args.once:
            print("\n".join(render_status(answer)), flush=True)
            return 0
        return _watch(client, args.interval, answer)


def _interval(text: str) -> float:
    value = float(text)
    if value < 0.1:
        raise argparse.ArgumentTypeError("must be at least 0.1 seconds")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        parents=[common_options()],
        help="live one-screen view: models, groups, weights, load, rates",
        description="Per model and replica group: weight, replicas, in flight, req/s, errors.",
    )
    parser.add_argument(
        "--interval", type=_interval, default=1.0, help="seconds between redraws (default 1)"
    )
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.set_defaults(handler=main)
