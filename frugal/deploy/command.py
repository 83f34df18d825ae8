"""`frugal deploy`: files the container deployment needs (CLI layer).

    frugal deploy secrets deploy/compose/secrets     # what compose.yaml's `secrets:` mount

Also runnable without the `frugal` command: `python -m frugal.deploy secrets DIR`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from frugal.deploy.secrets import ensure_compose_secrets


def secrets(args: argparse.Namespace) -> int:
    made = ensure_compose_secrets(args.directory)
    print(f"secrets in {made.directory}: {made.pepper.name}, {made.admin_token.name}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add_actions(subparsers.add_parser("deploy", help="files for the container deployment"))


def add_actions(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(required=True, metavar="ACTION")
    made = actions.add_parser(
        "secrets", help="the key pepper and admin token for compose (made once, then kept)"
    )
    made.add_argument("directory", type=Path, help="e.g. deploy/compose/secrets")
    made.set_defaults(handler=secrets)
