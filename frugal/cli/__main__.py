"""The `frugal` command: one sub-command per module, registered by name."""

from __future__ import annotations

import argparse
import sys

from frugal.cli import bench, fleet, keys, status, up
from frugal.deploy import command as deploy

COMMANDS = (up, keys, fleet, status, bench, deploy)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="frugal", description="Frugal LLM serving endpoint")
    subparsers = parser.add_subparsers(required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
