"""The admin REST client shared by the CLI commands (`frugal keys`, `frugal fleet`).

CLI layer (HTTP only; never Redis). The admin token comes from --admin-token,
$FRUGAL_ADMIN_TOKEN, the file $FRUGAL_ADMIN_TOKEN_FILE, or the file `frugal up`
creates (var/secrets/admin-token), in that order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import httpx

from frugal.cli.stack import REPO_ROOT, StackFiles
from frugal.keys.admin_token import AdminTokenError, load_admin_token

ADMIN_URL_ENV = "FRUGAL_ADMIN_URL"
DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"

Action = Callable[[httpx.Client, argparse.Namespace], dict[str, Any]]


class CommandFailed(Exception):
    pass


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--admin-url",
        default=os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN_URL),
        help=f"admin API base URL (${ADMIN_URL_ENV}, default {DEFAULT_ADMIN_URL})",
    )
    common.add_argument("--admin-token", help="admin token (default: $FRUGAL_ADMIN_TOKEN etc.)")
    common.add_argument("--json", action="store_true", help="print the API's JSON answer")
    return common


def call(client: httpx.Client, method: str, path: str, body: Any = None) -> dict[str, Any]:
    try:
        response = client.request(method, path, json=body)
    except httpx.HTTPError as error:
        raise CommandFailed(f"cannot reach the admin API at {client.base_url}: {error}") from None
    try:
        answer: dict[str, Any] = response.json() if response.content else {}
    except ValueError:
        answer = {}
    if response.is_error:
        message = (answer.get("error") or {}).get("message") or response.reason_phrase
        raise CommandFailed(f"{message} (HTTP {response.status_code})")
    return answer


def admin_headers(args: argparse.Namespace) -> dict[str, str]:
    """The admin token from --admin-token, $FRUGAL_ADMIN_TOKEN or the stack's token file, as
    request headers; raises AdminTokenError when there is none."""
    token = args.admin_token or load_admin_token(
        default_file=StackFiles(REPO_ROOT / "var").admin_token
    )
    return {"authorization": f"Bearer {token}"}


def run_action(
    command: str,
    args: argparse.Namespace,
    actions: dict[str, Action],
    render: Callable[[str, dict[str, Any]], str],
) -> int:
    """Resolve the token, call the action, print its answer; the CLI's exit code."""
    try:
        headers = admin_headers(args)
    except AdminTokenError as error:
        print(f"frugal {command}: {error}", file=sys.stderr)
        return 2
    try:
        with httpx.Client(base_url=args.admin_url, headers=headers, timeout=10.0) as client:
            answer = actions[args.action](client, args)
    except CommandFailed as error:
        print(f"frugal {command} {args.action}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else render(args.action, answer), flush=True)
    return 0
