"""`frugal keys`: create, list, revoke and rotate API keys through the admin REST API.

CLI layer (HTTP client only, through admin_client; it never touches Redis).
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from typing import Any

import httpx

from frugal.cli.admin_client import Action, call, common_options, run_action
from frugal.keys.record import utc_now

KEYS_PATH = "/admin/v1/keys"


def _models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise argparse.ArgumentTypeError("name at least one model, or leave --models out for all")
    return models


def create(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    expires_at = None
    if args.expires_in_days is not None:
        expires_at = (utc_now() + timedelta(days=args.expires_in_days)).isoformat()
    body = {"name": args.name, "tenant": args.tenant, "models": args.models, "rpm": args.rpm,
            "tpm": args.tpm, "expires_at": expires_at}  # fmt: skip
    return call(client, "POST", KEYS_PATH, body)


def list_keys(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    return call(client, "GET", KEYS_PATH)


def revoke(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    return call(client, "POST", f"{KEYS_PATH}/{args.id}/revoke")


def rotate(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    return call(client, "POST", f"{KEYS_PATH}/{args.id}/rotate", {"overlap_s": args.overlap})


def _when(value: str | None) -> str:
    if value is None:
        return "-"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%SZ")


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def render_record(record: dict[str, Any]) -> list[str]:
    models = "*" if record["models"] is None else ",".join(record["models"])
    return [
        f"  id:       {record['id']}",
        f"  name:     {record['name']}",
        f"  tenant:   {record['tenant']}",
        f"  models:   {models}",
        f"  rpm/tpm:  {_limit(record['rpm'])} / {_limit(record['tpm'])}",
        f"  expires:  {_when(record['expires_at'])}",
        f"  status:   {record['status']}",
    ]


def render(action: str, answer: dict[str, Any]) -> str:
    if action == "list":
        rows = [("ID", "NAME", "TENANT", "MODELS", "RPM", "TPM", "EXPIRES", "LAST USED", "STATUS")]
        for r in answer["data"]:
            models = "*" if r["models"] is None else ",".join(r["models"])
            rows.append((r["id"], r["name"], r["tenant"], models, _limit(r["rpm"]),
                         _limit(r["tpm"]), _when(r["expires_at"]), _when(r["last_used_at"]),
                         r["status"]))  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                         for row in rows)  # fmt: skip
    if action == "revoke":
        return "\n".join(["Revoked API key:", *render_record(answer)])
    lines = ["Created API key:", *render_record(answer["record"])]
    if action == "rotate":
        previous = answer["previous"]
        until = _when(previous["valid_until"])
        heading = f"Rotated API key {previous['id']}; it keeps working until {until}. New key:"
        lines = [heading, *render_record(answer["record"])]
    lines += ["", "The key is shown only this once; store it now:", "", f"  {answer['key']}", ""]
    return "\n".join(lines)


ACTIONS: dict[str, Action] = {
    "create": create,
    "list": list_keys,
    "revoke": revoke,
    "rotate": rotate,
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = common_options()

    parser = subparsers.add_parser("keys", help="create, list, revoke and rotate API keys")
    actions = parser.add_subparsers(required=True, metavar="ACTION", dest="action")
    new = actions.add_parser("create", parents=[common], help="create a key (shown once)")
    new.add_argument("--name", required=True)
    new.add_argument("--tenant", required=True)
    new.add_argument("--models", type=_models, help="comma list (default: every model)")
    new.add_argument("--rpm", type=int, help="requests per minute (default: unlimited)")
    new.add_argument("--tpm", type=int, help="tokens per minute (default: unlimited)")
    new.add_argument("--expires-in-days", type=float, help="default: never expires")
    actions.add_parser("list", parents=[common], help="list every key")
    gone = actions.add_parser("revoke", parents=[common], help="refuse a key from now on")
    gone.add_argument("id")
    turn = actions.add_parser("rotate", parents=[common], help="replace a key's secret")
    turn.add_argument("id")
    turn.add_argument(
        "--overlap", type=int, default=300, help="seconds the old key keeps working (300)"
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    return run_action("keys", args, ACTIONS, render)
