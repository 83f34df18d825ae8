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

Only the virtual-time benchmark runs it so far (`frugal bench routing-virtual`, policy
`adaptive+picker`); the request processor does not pick yet (issue 13).

The prediction for a group of R replicas, n requests in flight, W prompt tokens awaiting
their first token, and a request of L prompt tokens, with least-request spreading them:
  ttft   = a + b * (n / R + 1) + c * (W / R + L)    (its prefill step, after those queued)
  decode = T * (a + b * (n / R + 1))                (T output tokens at that batch)
  cost   = ttft + decode_weight * decode
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


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
