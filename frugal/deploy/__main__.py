"""`python -m frugal.deploy ...`: `frugal deploy` without the `frugal` command (wiring only)."""

from __future__ import annotations

import argparse
import sys

from frugal.deploy import command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m frugal.deploy")
    command.add_actions(parser)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
