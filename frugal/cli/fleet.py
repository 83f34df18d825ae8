"""`frugal fleet`: models, replica groups and replicas, and the balancer, through the admin REST.

CLI layer (HTTP client only, through admin_client).
  frugal fleet list
  frugal fleet add MODEL GROUP HOST:PORT       register a replica
  frugal fleet drain MODEL GROUP HOST:PORT     no new requests; removed once idle
  frugal fleet remove MODEL GROUP HOST:PORT
  frugal fleet weight MODEL GROUP N            a group's static weight
  frugal fleet policy MODEL static|concurrency_bands|adaptive [--threshold ...]
  frugal fleet balancer                        live weights, load and reasons
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx

from frugal.cli.admin_client import Action, call, common_options, run_action

MODELS = "/admin/v1/models"


def _group_path(args: argparse.Namespace) -> str:
    return f"{MODELS}/{args.model}/groups/{args.group}"


def list_fleet(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    return call(client, "GET", MODELS)


def add(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    return call(client, "POST", f"{_group_path(args)}/replicas", {"address": args.address})


def drain(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    return call(client, "POST", f"{_group_path(args)}/replicas/{args.address}/drain")


def remove(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    call(client, "DELETE", f"{_group_path(args)}/replicas/{args.address}")
    return call(client, "GET", MODELS)


def weight(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    return call(client, "PATCH", _group_path(args), {"weight": args.weight})


POLICY_OPTIONS = ("threshold", "hysteresis", "low_load_group", "high_load_group", "min_share")


def policy(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"type": args.type}
    body.update({k: getattr(args, k) for k in POLICY_OPTIONS if getattr(args, k) is not None})
    return call(client, "PUT", f"{MODELS}/{args.model}/balancer", body)


def balancer(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    return call(client, "GET", "/admin/v1/balancer")


ACTIONS: dict[str, Action] = {
    "list": list_fleet,
    "add": add,
    "drain": drain,
    "remove": remove,
    "weight": weight,
    "policy": policy,
    "balancer": balancer,
}


def _render_fleet(answer: dict[str, Any]) -> list[str]:
    lines = []
    for model in answer["data"]:
        lines.append(f"{model['name']}  (balancer: {model['balancer']['type']})")
        for group in model["groups"]:
            lines.append(
                f"  {group['name']}  weight {group['weight']} (static {group['static_weight']})"
                f"  profile {group['profile']}"
            )
            for replica in group["replicas"]:
                state = "draining" if replica["draining"] else (
                    "healthy" if replica["healthy"] else "unhealthy")  # fmt: skip
                lines.append(
                    f"    {replica['address']:<22} {state:<10} in flight {replica['in_flight']}"
                )
    return lines


def _render_balancer(answer: dict[str, Any]) -> list[str]:
    lines = []
    for model in answer["data"]:
        lines.append(f"{model['model']}: weights {model['weights']}")
        for load in model["load"]:
            lines.append(
                f"  {load['group']}: {load['replicas']} replicas, {load['in_flight']:.0f} in "
                f"flight, {load['running'] if load['running'] is not None else '-'} running"
            )
        lines.append(f"  why: {model['reason']}")
    return lines


def render(action: str, answer: dict[str, Any]) -> str:
    if action == "balancer":
        return "\n".join(_render_balancer(answer))
    return "\n".join(_render_fleet(answer))


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = common_options()
    parser = subparsers.add_parser("fleet", help="models, replica groups, replicas, balancer")
    actions = parser.add_subparsers(required=True, metavar="ACTION", dest="action")
    actions.add_parser("list", parents=[common], help="models, groups and replicas")
    actions.add_parser("balancer", parents=[common], help="live weights, load, reasons")
    for name, help_text in (
        ("add", "register a replica"),
        ("drain", "stop new requests to a replica; it is removed once idle"),
        ("remove", "remove a replica now"),
    ):
        action = actions.add_parser(name, parents=[common], help=help_text)
        action.add_argument("model")
        action.add_argument("group")
        action.add_argument("address", help="host:port")
    weighted = actions.add_parser("weight", parents=[common], help="set a group's static weight")
    weighted.add_argument("model")
    weighted.add_argument("group")
    weighted.add_argument("weight", type=int)
    chosen = actions.add_parser("policy", parents=[common], help="set a model's balancer")
    chosen.add_argument("model")
    chosen.add_argument("type", choices=["static", "concurrency_bands", "adaptive"])
    chosen.add_argument("--threshold", type=int)
    chosen.add_argument("--hysteresis", type=int)
    chosen.add_argument("--low-load-group", dest="low_load_group")
    chosen.add_argument("--high-load-group", dest="high_load_group")
    chosen.add_argument("--min-share", dest="min_share", type=float)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    return run_action("fleet", args, ACTIONS, render)
