"""`frugal keys`: create, list, revoke and rotate API keys through the admin REST API.

CLI layer (HTTP client only; it never touches Redis). The admin token comes
from --admin-token, $FRUGAL_ADMIN_TOKEN, the file $FRUGAL_ADMIN_TOKEN_FILE, or
the file `frugal up` creates (StackFiles.admin_token under var/), in that order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from frugal.cli.stack import REPO_ROOT, StackFiles
from frugal.keys.admin_token import AdminTokenError, load_admin_token
from frugal.keys.record import utc_now

ADMIN_URL_ENV = "FRUGAL_ADMIN_URL"
DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"
KEYS_PATH = "/admin/v1/keys"


class CommandFailed(Exception):
    pass


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
    return _call(client, "POST", KEYS_PATH, body)


def list_keys(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    return _call(client, "GET", KEYS_PATH)


def revoke(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    return _call(client, "POST", f"{KEYS_PATH}/{args.id}/revoke")


def rotate(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    return _call(client, "POST", f"{KEYS_PATH}/{args.id}/rotate", {"overlap_s": args.overlap})


def _call(client: httpx.Client, method: str, path: str, body: Any = None) -> dict[str, Any]:
    try:
        response = client.request(method, path, json=body)
    except httpx.HTTPError as error:
        raise CommandFailed(f"cannot reach the admin API at {client.base_url}: {error}") from None
    try:
        answer: dict[str, Any] = response.json()
    except ValueError:
        answer = {}
    if response.is_error:
        message = (answer.get("error") or {}).get("message") or response.reason_phrase
        raise CommandFailed(f"{message} (HTTP {response.status_code})")
    return answer


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


ACTIONS: dict[str, Callable[[httpx.Client, argparse.Namespace], dict[str, Any]]] = {
    "create": create,
    "list": list_keys,
    "revoke": revoke,
    "rotate": rotate,
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--admin-url",
        default=os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN_URL),
        help=f"admin API base URL (${ADMIN_URL_ENV}, default {DEFAULT_ADMIN_URL})",
    )
    common.add_argument("--admin-token", help="admin token (default: $FRUGAL_ADMIN_TOKEN etc.)")
    common.add_argument("--json", action="store_true", help="print the API's JSON answer")

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
    try:
        token = args.admin_token or load_admin_token(
            default_file=StackFiles(REPO_ROOT / "var").admin_token
        )
    except AdminTokenError as error:
        print(f"frugal keys: {error}", file=sys.stderr)
        return 2
    headers = {"authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=args.admin_url, headers=headers, timeout=10.0) as client:
            answer = ACTIONS[args.action](client, args)
    except CommandFailed as error:
        print(f"frugal keys {args.action}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else render(args.action, answer), flush=True)
    return 0
