"""What the adaptive policy learns of prefill: each group's prefill time per prompt token,
and the model's prompt bursts and output lengths.

Pure layer, plain floats. An engine's prefill steps (its prefill-step tally) last its
decode line's step plus c ms for each prompt token they prefill (docs/simulator.md, "The
step model"): c is what is left of their mean duration once the group's decode line is
taken off, per token, fitted with the same exponential forgetting as the line. The burst
is the most prompt tokens the model's replicas prefilled at once (each replica's mean
tokens per prefill step in a tick, summed over them) within the horizon: what a request
that arrives with them waits for, where prompts that merely came in the same tick but
were prefilled steps apart would overstate it. The output length and the prompt length are
the means of the finished requests', forgotten alike.
"""

from __future__ import annotations

from collections import deque

from control_plane.balancer.cost_model import PrefillPressure, StepCost
from control_plane.balancer.load import GroupPrefill, PrefillSample

# Finished requests (forgetting-weighted) before their mean output stands for the model's:
# the first to finish are the shortest, and a mean of a few of them would make every
# request's prefill look large against its decode steps.
MIN_FINISHED = 32.0


class PrefillFit:
    """ms of prefill per prompt token, from prefill-step samples and the decode line."""

    def __init__(self, forgetting: float) -> None:
        self._forgetting = forgetting
        self._extra_ms = 0.0
        self._tokens = 0.0

    def add(self, sample: PrefillSample, line: StepCost) -> None:
        f = self._forgetting
        extra = sample.step_seconds * 1000.0 - line.step_ms(sample.running_per_replica)
        self._extra_ms = f * self._extra_ms + extra
        self._tokens = f * self._tokens + sample.tokens_per_step

    def ms_per_token(self) -> float | None:
        """None before any sample; never below 0 (noise on a near-free prefill)."""
        if self._tokens <= 0:
            return None
        return max(self._extra_ms / self._tokens, 0.0)


class BurstWatch:
    """The model's prefill bursts over `horizon_s`, and its requests' mean output and
    prompt lengths."""

    def __init__(self, horizon_s: float, forgetting: float) -> None:
        self._horizon_s = horizon_s
        self._forgetting = forgetting
        self._ticks: deque[tuple[float, float]] = deque()  # (now, prompt tokens that tick)
        self._finished = 0.0
        self._finished_tokens = 0.0
        self._finished_prompt_tokens = 0.0

    def observe(self, now: float, groups: list[GroupPrefill]) -> None:
        self._ticks.append((now, sum(s.tokens_per_step for g in groups for s in g.samples)))
        while self._ticks and self._ticks[0][0] < now - self._horizon_s:
            self._ticks.popleft()
        finished = sum(g.finished for g in groups)
        if finished > 0:
            f = self._forgetting
            self._finished = f * self._finished + finished
            self._finished_tokens = f * self._finished_tokens + sum(
                g.finished_tokens for g in groups
            )
            self._finished_prompt_tokens = f * self._finished_prompt_tokens + sum(
                g.finished_prompt_tokens for g in groups
            )

    def pressure(self) -> PrefillPressure | None:
        """None before MIN_FINISHED requests have finished or while nothing was prefilled."""
        burst = max((tokens for _, tokens in self._ticks), default=0.0)
        if burst <= 0 or self._finished < MIN_FINISHED:
            return None
        return PrefillPressure(
            burst,
            self._finished_tokens / self._finished,
            self._finished_prompt_tokens / self._finished,
        )
