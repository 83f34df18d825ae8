"""The wall-clock prefix-routing benchmark's plan: the Mooncake replay, scaled down, and each
stack's frugal.yaml (pure layer).

Mooncake's prompts are lists of 512-token blocks (`hash_ids`; equal ids, equal prefixes).
Scaled down 16x so two cores can serve them: a block becomes `BLOCK_WORDS` words that spell
its id (fixed width, so a block is always `BLOCK_CHARS` characters), a prompt the words of
its blocks cut to `input_length / 16`, an output at most `MAX_TOKENS` tokens. The engines'
KV budget (and with it the prefix cache) shrinks by the same 16, so a block stays as
scarce as on the real replica. Arrivals keep the trace's order and are compressed in time
(4x by default): a conversation's turns come minutes apart, so the first minute of the
trace has almost no repeated prefix. Compression keeps how many blocks are written
between two turns, so what a cache holds when the next turn comes stays the same.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine_workers.backends.sim_model import PROFILES as SIM_PROFILES
from frugal.bench.fleet import JITTER, PROFILES, TP8, gateway_config
from frugal.bench.ports import PortPicker

MODEL = "bench-prefix"
GROUP = "replicas"
# Eight tp8 replicas, as the virtual run's "8 x tp8" fleet: the paper's four tp2 replicas
# hold too little KV for a prefix to outlive the time between a conversation's turns, so
# routing could not matter there (in virtual time, 4.1 % of prompt tokens hit with
# least-request, 4.5 % with prefix routing).
REPLICAS = 8
SCALE = 16
BLOCK_TOKENS = 512 // SCALE  # 32 words: one Mooncake block
WORD_CHARS = 9  # "b0001234" and a space
BLOCK_CHARS = BLOCK_TOKENS * WORD_CHARS
MAX_TOKENS = 32
INSIDE = ("least_request", "prefix")


@dataclass(frozen=True)
class PrefixPorts:
    """Loopback ports of one stack (frugal.bench.fleet.GatewayPortsOf, and the replicas)."""

    listener: int
    xds: int
    envoy_admin: int
    safety_filter: int
    admin: int
    redis: int
    replicas: tuple[int, ...]


def prefix_ports(picker: PortPicker) -> PrefixPorts:
    return PrefixPorts(
        listener=picker.take(),
        xds=picker.take(),
        envoy_admin=picker.take(),
        safety_filter=picker.take(),
        admin=picker.take(),
        redis=picker.take(),
        replicas=tuple(picker.take(engine=True) for _ in range(REPLICAS)),
    )


@dataclass(frozen=True)
class PrefixRequest:
    at_s: float
    prompt: str
    max_tokens: int


def block_words(block: int) -> list[str]:
    """The words standing for one block: its id in each, so blocks differ from the first."""
    return [f"b{block % 10**5:05d}{i:02d}" for i in range(BLOCK_TOKENS)]


def mooncake_replay(path: Path, requests: int, compression: float) -> list[PrefixRequest]:
    """The trace's first `requests`, scaled as the module says, at their times divided by
    `compression`."""
    replay = []
    first: float | None = None
    for line in path.read_text().splitlines()[:requests]:
        record = json.loads(line)
        at_s = record["timestamp"] / 1000.0
        first = at_s if first is None else first
        words = [w for block in record["hash_ids"] for w in block_words(int(block))]
        length = max(1, math.ceil(int(record["input_length"]) / SCALE))
        output = max(1, min(MAX_TOKENS, int(record["output_length"])))
        at = (at_s - first) / compression
        replay.append(PrefixRequest(at, " ".join(words[:length]), output))
    return replay


def prefix_config(
    inside: str, ports: PrefixPorts, *, time_scale: float, redis_dir: str
) -> dict[str, Any]:
    """frugal.yaml for one run: the tp8 replicas in one group, prefix caches on, routed
    inside the group by least-request or by the prompt's prefix key."""
    if inside not in INSIDE:
        raise ValueError(f"unknown routing {inside!r}; known: {list(INSIDE)}")
    profile = {
        **PROFILES[TP8],
        "time_scale": time_scale,
        "jitter": JITTER,
        "prefix_block_tokens": BLOCK_TOKENS,
        "kv_budget_tokens": SIM_PROFILES[TP8].kv_budget_tokens // SCALE,
    }
    safety_filter = {
        "port": ports.safety_filter,
        "metrics_port": 0,
        "enforce": False,
        "prefix_block_chars": BLOCK_CHARS,
    }
    model: dict[str, Any] = {
        "name": MODEL,
        "groups": [
            {"name": GROUP, "profile": TP8, "replicas": [f"127.0.0.1:{p}" for p in ports.replicas]}
        ],
    }
    if inside == "prefix":
        model["prefix_routing"] = {}
    return {
        **gateway_config(
            ports,
            node_id="frugal-bench-prefix",
            safety_filter=safety_filter,
            redis_dir=redis_dir,
        ),
        "profiles": {TP8: profile},
        "models": [model],
    }
