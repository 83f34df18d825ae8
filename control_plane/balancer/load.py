"""What the balancer sees of a model's live load, and what it decides.

Pure layer: frozen value types passed from the I/O loop (which samples Envoy's
`upstream_rq_active` and the engines' gauges and counters) to a policy, and the
policy's answer. `step_sample` turns two readings of one replica's counters into
one observation of its step time; it does no I/O either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Route weights are integers summing to this (Envoy `weighted_clusters`; we keep 0..100).
TOTAL_WEIGHT = 100


@dataclass(frozen=True)
class StepSample:
    """One observation of a replica's engine: the mean number of sequences running
    on it over an interval, and the mean duration of one engine step in that interval."""

    running_per_replica: float
    step_seconds: float


@dataclass(frozen=True)
class PrefillSample:
    """One observation of a replica's prefill steps (steps that prefilled a prompt): the
    mean sequences running in them, their mean duration, and the mean prompt tokens each
    prefilled."""

    running_per_replica: float
    step_seconds: float
    tokens_per_step: float


@dataclass(frozen=True)
class GroupPrefill:
    """A group's prefill since the last tick, summed over its replicas: the requests its
    engines finished, the tokens those generated and their prompts, and the prefill-step
    observations (one a replica)."""

    finished: float = 0.0
    finished_tokens: float = 0.0
    finished_prompt_tokens: float = 0.0
    samples: tuple[PrefillSample, ...] = ()


@dataclass(frozen=True)
class GroupLoad:
    """The live load of one replica group (one Envoy cluster).

    `replicas`: healthy replicas not draining. `in_flight`: requests active in Envoy
    for the group's cluster, summed over Envoys. `running` / `waiting`: the engines'
    own gauges summed over the group's replicas, None when not reported.
    `samples`: step-time observations new since the last tick. `prefill`: what its engines
    prefilled and were sent since the last tick, when they report it.
    """

    group: str
    replicas: int
    in_flight: float
    running: float | None = None
    waiting: float | None = None
    samples: tuple[StepSample, ...] = ()
    prefill: GroupPrefill | None = None


@dataclass(frozen=True)
class ModelLoad:
    """All of one model's groups at one tick; `now` is a monotonic time in seconds."""

    model: str
    groups: tuple[GroupLoad, ...]
    now: float

    def __post_init__(self) -> None:
        names = [group.group for group in self.groups]
        if not names:
            raise ValueError(f"model {self.model!r}: no replica groups")
        if len(set(names)) != len(names):
            raise ValueError(f"model {self.model!r}: duplicate group names in {names}")

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(group.group for group in self.groups)

    @property
    def in_flight(self) -> float:
        """Requests in flight for the model, over all its groups."""
        return sum(group.in_flight for group in self.groups)


@dataclass(frozen=True)
class Decision:
    """Route weights for a model's groups (each 0..100, summing to exactly 100) and a
    human-readable reason, shown by the admin REST."""

    weights: Mapping[str, int]
    reason: str

    def __post_init__(self) -> None:
        if not self.weights:
            raise ValueError("a decision needs at least one group")
        if any(not 0 <= weight <= TOTAL_WEIGHT for weight in self.weights.values()):
            raise ValueError(f"weights must lie in 0..{TOTAL_WEIGHT}: {dict(self.weights)}")
        if sum(self.weights.values()) != TOTAL_WEIGHT:
            raise ValueError(f"weights must sum to {TOTAL_WEIGHT}: {dict(self.weights)}")


@dataclass(frozen=True)
class DecodeCounters:
    """An engine's own decode-step tally (`frugal_engine_decode_steps_total` and its two
    siblings): steps that prefilled nothing, their seconds, and the sequences they ran."""

    steps: float
    seconds: float
    sequences: float


@dataclass(frozen=True)
class PrefillCounters:
    """An engine's own prefill-step tally (`frugal_engine_prefill_steps_total` and its
    siblings): steps that prefilled a prompt, their seconds, the sequences they ran and
    the prompt tokens they prefilled."""

    steps: float
    seconds: float
    sequences: float
    tokens: float


@dataclass(frozen=True)
class RequestCounters:
    """An engine's finished requests, the tokens they generated and their prompts (the
    count and sum of `frugal_engine_request_generation_tokens`, and the sum of
    `frugal_engine_request_prompt_tokens`)."""

    finished: float
    finished_tokens: float
    finished_prompt_tokens: float


@dataclass(frozen=True)
class ReplicaCounters:
    """One reading of a replica's engine: monotonic time `at` (seconds), sequences
    `running` now (a gauge), generated tokens so far (a counter), and its decode-step
    and prefill-step tallies and request counters when the engine keeps them."""

    at: float
    running: float
    tokens_total: float
    decode: DecodeCounters | None = None
    prefill: PrefillCounters | None = None
    requests: RequestCounters | None = None


# The largest change of the running batch between two readings (as a fraction of it)
# for which their mean still stands for the whole interval.
STEADY_BATCH_CHANGE = 0.25


def step_sample(previous: ReplicaCounters, current: ReplicaCounters) -> StepSample | None:
    """The step time of one replica between two readings, or None when they say nothing.

    From the engine's decode-step tally when both readings have one: the mean batch and
    the mean duration of the decode steps in between, exact and free of prefill (None
    when it made none). Otherwise inferred from the token counter, as follows.

    A continuous-batching engine gives every running sequence one token per step
    (docs/simulator.md, "The step model"), so over `dt` with `n` sequences running it makes
    `n * dt / t_step` tokens: `t_step = n * dt / d_tokens`. `n` is the mean of the
    two gauge readings, exact when the batch did not change in between. None when no
    time passed, nothing ran, no token was made, or the counter went backwards (the
    engine restarted); also when the batch changed a lot in between (e.g. 0 -> 1 at a
    low load): the mean of the readings then says little of the time really spent
    running, and such samples would make a lightly used group look faster than it is.
    """
    if previous.decode is not None and current.decode is not None:
        return _decode_sample(previous.decode, current.decode)
    dt = current.at - previous.at
    d_tokens = current.tokens_total - previous.tokens_total
    mean_running = (previous.running + current.running) / 2
    if dt <= 0 or d_tokens <= 0 or mean_running <= 0:
        return None
    if abs(current.running - previous.running) > max(0.5, STEADY_BATCH_CHANGE * mean_running):
        return None
    return StepSample(running_per_replica=mean_running, step_seconds=mean_running * dt / d_tokens)


def _decode_sample(previous: DecodeCounters, current: DecodeCounters) -> StepSample | None:
    steps = current.steps - previous.steps
    seconds = current.seconds - previous.seconds
    sequences = current.sequences - previous.sequences
    if steps <= 0 or seconds <= 0 or sequences <= 0:
        return None  # none made, or the engine restarted
    return StepSample(running_per_replica=sequences / steps, step_seconds=seconds / steps)


def prefill_sample(previous: PrefillCounters, current: PrefillCounters) -> PrefillSample | None:
    """The prefill steps of one replica between two tallies, or None when it made none
    (or restarted)."""
    steps = current.steps - previous.steps
    seconds = current.seconds - previous.seconds
    tokens = current.tokens - previous.tokens
    sequences = current.sequences - previous.sequences
    if steps <= 0 or seconds <= 0 or tokens <= 0 or sequences < 0:
        return None
    return PrefillSample(sequences / steps, seconds / steps, tokens / steps)
