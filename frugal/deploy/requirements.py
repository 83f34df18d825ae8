"""Which of pyproject.toml's dependencies each container image installs (pure, plus a CLI).

The project is one Python distribution whose dependencies include the `transformers`
backend's model stack (torch, transformers, ...), which only the `engine-cpu` image needs:
the other images install the frugal wheel with `--no-deps` and the `service` group below.
The Dockerfile's builder runs this module from the source tree, before anything is
installed, so it uses the standard library only.

    python -m frugal.deploy.requirements pyproject.toml service > service.txt
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

# The `transformers` backend (engine-cpu only). torch is a group of its own: it is fetched
# from its own index (its CPU build), before the rest of the model stack.
TORCH = frozenset({"torch"})
MODEL_STACK = frozenset({"transformers", "gguf", "accelerate"})
# Needed to build, never to run: proto/generate.py (in the builder) and `frugal bench` plots.
BUILD_ONLY = frozenset({"grpcio-tools", "matplotlib"})
# What proto/generate.py needs, in the builder.
PROTO = frozenset({"grpcio-tools", "grpcio", "protobuf", "googleapis-common-protos"})

GROUPS = ("service", "torch", "model", "proto")


def package_name(requirement: str) -> str:
    """The normalized project name of a requirement line (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def dependencies(pyproject: str) -> list[str]:
    """The `[project] dependencies` of a pyproject.toml's text."""
    return list(tomllib.loads(pyproject)["project"]["dependencies"])


def group(requirements: list[str], name: str) -> list[str]:
    """The requirements of one group: `service` is every dependency that is neither the model
    stack nor build-only; the others are their named sets."""
    if name == "service":
        left_out = TORCH | MODEL_STACK | BUILD_ONLY
        return [r for r in requirements if package_name(r) not in left_out]
    named = {"torch": TORCH, "model": MODEL_STACK, "proto": PROTO}[name]
    return [r for r in requirements if package_name(r) in named]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="print one image group's requirements")
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("group", choices=GROUPS)
    args = parser.parse_args(argv)
    lines = group(dependencies(args.pyproject.read_text()), args.group)
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
