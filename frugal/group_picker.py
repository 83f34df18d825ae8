"""Which replica group one request goes to, from each group's step lines and queue (shared, pure).

Route weights split a model's traffic once a balancer tick (250 ms); within a tick every
request is drawn by the same weights, so a burst's long prompts land on a group that
prefills slowly, and a short prompt waits behind a long prefill on the fast group while the
other group idles. A picker that sees each request's prompt and each group's queue does
better: each group's predicted time to first token for this request, plus a fraction of its
predicted decode time, and the least wins (as the Gateway API Inference Extension's endpoint
picker scores endpoints per request). The lines are what the `adaptive` balancer learns from
the engines' own step tallies (control_plane.balancer.adaptive: `a + b * running` ms a decode
step, `c` ms a prompt token); the queue is what the picker itself has sent: requests in
flight, and the prompt tokens of those without a first token yet.

A model picks per request when its balancer is `adaptive` with `group_picker` set. The
control plane's balancer leader publishes each such model's lines, with its groups' serving
replicas, every tick (`ModelPicker`, through frugal.group_lines_store, with a short TTL);
the safety filter's request processor reads them every second, keeps the queue of what it
sent each group (safety_filter/extproc/group_tally.py) and sets the request's
`x-frugal-group` header (frugal.wire.GROUP_HEADER), which a route per group matches ahead
of the weighted one. The virtual-time benchmark runs the same picker (`frugal bench
routing-virtual`, policy `adaptive+picker`).

The prediction for a group of R replicas, n requests in flight, W prompt tokens awaiting
their first token, and a request of L prompt tokens, with least-request spreading them:
  ttft   = a + b * (n / R + 1) + c * (W / R + L)    (its prefill step, after those queued)
  decode = T * (a + b * (n / R + 1))                (T output tokens at that batch)
  cost   = ttft + decode_weight * decode
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class GroupLine:
    """A group's step times in ms: decode `a + b * running per replica`, prefill `c` a token."""

    a_ms: float
    b_ms: float
    c_ms: float


@dataclass(frozen=True)
class GroupQueue:
    """What the picker knows of a group now."""

    replicas: int  # serving
    in_flight: int  # requests sent to it and not finished
    awaiting_tokens: int  # prompt tokens of the requests without a first token yet


@dataclass(frozen=True)
class PickerConfig:
    # The share of the predicted decode time weighed with the TTFT, and the output length
    # it is predicted for. Tried in virtual time on the paper fleet (closed loads 1 to 1,024,
    # the four windows of each trace): 0 and 0.1 came within 1 % of each other's throughput
    # and 18 ms of each other's Azure code p99; at 1.0 the decode term outweighs a queued
    # prefill, and Azure conversation's p99 went back to the tp8 layout's (69.3-85.0 ms
    # against 70.2-85.8). 0.1 keeps the decode speed in the choice at a tenth of its weight.
    decode_weight: float = 0.1
    decode_tokens: int = 32


def predicted_cost(
    line: GroupLine, queue: GroupQueue, prompt_tokens: int, config: PickerConfig
) -> float:
    """The group's predicted TTFT for this request plus `decode_weight` of its decode time."""
    batch = queue.in_flight / queue.replicas + 1
    ttft = line.a_ms + line.b_ms * batch + line.c_ms * (
        queue.awaiting_tokens / queue.replicas + prompt_tokens)  # fmt: skip
    decode = config.decode_tokens * (line.a_ms + line.b_ms * batch)
    return ttft + config.decode_weight * decode


def pick_group(
    candidates: Mapping[str, tuple[GroupLine, GroupQueue]],
    prompt_tokens: int,
    config: PickerConfig,
) -> str | None:
    """The group of least predicted cost among those with serving replicas (the first on a
    tie, in the mapping's order); None when none has any."""
    costs = {
        name: predicted_cost(line, queue, prompt_tokens, config)
        for name, (line, queue) in candidates.items()
        if queue.replicas > 0
    }
    return min(costs, key=costs.__getitem__) if costs else None


@dataclass(frozen=True)
class ModelPicker:
    """What a request processor needs to pick one model's group: the settings, and each
    serving group's line and number of serving replicas."""

    config: PickerConfig
    groups: Mapping[str, tuple[GroupLine, int]]

    def candidates(
        self, queue: Mapping[str, tuple[int, int]]
    ) -> dict[str, tuple[GroupLine, GroupQueue]]:
        """Each group's line with its queue, from what was sent it: (in flight, prompt
        tokens awaiting a first token)."""
        return {
            name: (line, GroupQueue(replicas, *queue.get(name, (0, 0))))
            for name, (line, replicas) in self.groups.items()
        }


def encode_pickers(pickers: Mapping[str, ModelPicker]) -> bytes:
    """The JSON the control plane publishes: model -> settings and groups."""
    return orjson.dumps(
        {
            model: {
                "decode_weight": picker.config.decode_weight,
                "decode_tokens": picker.config.decode_tokens,
                "groups": {
                    name: {"a_ms": line.a_ms, "b_ms": line.b_ms, "c_ms": line.c_ms,
                           "replicas": replicas}
                    for name, (line, replicas) in picker.groups.items()
                },
            }
            for model, picker in pickers.items()
        },
        option=orjson.OPT_SORT_KEYS,
    )  # fmt: skip


def decode_pickers(raw: bytes | str) -> dict[str, ModelPicker]:
    """`encode_pickers`' JSON back; raises ValueError (orjson's, or a KeyError or
    TypeError turned into one) when it is not that."""
    try:
        data: dict[str, Any] = orjson.loads(raw)
        return {
            model: ModelPicker(
                PickerConfig(float(entry["decode_weight"]), int(entry["decode_tokens"])),
                {
                    name: (GroupLine(float(g["a_ms"]), float(g["b_ms"]), float(g["c_ms"])),
                           int(g["replicas"]))
                    for name, g in entry["groups"].items()
                },
            )
            for model, entry in data.items()
        }  # fmt: skip
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"not a group picker state: {error!r}") from error
