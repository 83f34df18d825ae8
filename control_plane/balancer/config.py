"""How each model's traffic is split over its replica groups: the balancer policy config.

Pure layer: a pydantic discriminated union on `type`, one class per policy,
selected per model in frugal.yaml (`models[].balancer`) and switchable at run
time through the admin REST. The policies themselves are in this package,
registered by the same names.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from frugal.group_picker import PickerConfig


class _PolicyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StaticConfig(_PolicyConfig):
    """Fixed weights: each group's `weight` from the config (or the admin REST)."""

    type: Literal["static"] = "static"


class ConcurrencyBandsConfig(_PolicyConfig):
    """The ScaleLLM blueprint (section 6): below `threshold` requests in flight for the
    model, new requests go to `low_load_group` (high tensor parallelism, lowest latency);
    above it, to `high_load_group` (many replicas, highest throughput). `hysteresis`
    requests on each side of the threshold keep it from flapping."""

    type: Literal["concurrency_bands"] = "concurrency_bands"
    threshold: int = Field(default=64, ge=1)
    hysteresis: int = Field(default=8, ge=0)
    low_load_group: str
    high_load_group: str


class GroupPickerConfig(_PolicyConfig):
    """Pick each request's group in the request processor, from the lines `adaptive` learns
    and the processor's own count of what it sent each group (frugal.group_picker); the
    route weights stay the fallback, for requests it does not pick (before every serving
    group is measured, or when the lines are older than their TTL)."""

    # The share of the predicted decode time weighed with the TTFT, and the output length
    # it is predicted for (frugal.group_picker.PickerConfig, where the values were chosen).
    decode_weight: float = Field(default=0.1, ge=0, le=10)
    decode_tokens: int = Field(default=32, ge=1, le=100_000)

    def settings(self) -> PickerConfig:
        return PickerConfig(self.decode_weight, self.decode_tokens)


class AdaptiveConfig(_PolicyConfig):
    """A cost model learned online: each group's step time as a function of the
    sequences running per replica, fitted from the engines' own counters; new
    requests go where the marginal latency is lowest."""

    type: Literal["adaptive"] = "adaptive"
    # A group not measured yet keeps at least this share until its engines report steps.
    min_share: float = Field(default=0.05, ge=0, le=0.5)
    # Weight of the past in the online fit (exponential forgetting per sample).
    forgetting: float = Field(default=0.98, gt=0, le=1)
    # How far back the split looks for the largest burst of prompt tokens, whose prefill
    # it spreads over the groups by their prefill speed; 0 leaves prefill out.
    burst_horizon_s: float = Field(default=10.0, ge=0)
    # Off (the route weights split every request) unless set.
    group_picker: GroupPickerConfig | None = None


BalancerConfig = Annotated[
    StaticConfig | ConcurrencyBandsConfig | AdaptiveConfig, Field(discriminator="type")
]
