"""What `frugal bench engine` runs: the served model, the levels, the workload (pure layer).

The model and its profile are the first model of a frugal.yaml (by default the
repository's, which `make up` serves) and its first replica group. Both systems see the
same requests: at concurrency c, c streams in flight (closed loop) and
max(requests_per_stream x c, min_requests) requests in all, the i-th asking PROMPTS[i mod n]
with the same max_tokens and temperature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from control_plane.model import FrugalConfig
from frugal.bench.compare_fleet import GatewayPorts
from frugal.bench.fleet import gateway_config

# The systems' names; ratios are frugal / in-process.
IN_PROCESS, FRUGAL = "in-process", "frugal"
DEFAULT_LEVELS = (1, 4, 16)
REQUESTS_PER_STREAM = 2
MIN_REQUESTS = 4
MAX_TOKENS = 64
TEMPERATURE = 0.7
# Short chat questions a small instruct model answers at some length, so max_tokens (not
# the end of the answer) usually decides how many tokens a request gets.
PROMPTS = (
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle stays upright while moving.",
    "Describe a walk through a city market in the morning.",
    "What are the main causes of ocean tides? Explain in detail.",
    "Give me a recipe for a simple vegetable soup.",
    "Explain what a compiler does, step by step.",
    "Describe the water cycle to a ten-year-old.",
    "Write a letter to a friend about a trip to the mountains.",
)


@dataclass(frozen=True)
class ServedModel:
    """The model both systems run, with the profile of its first replica group."""

    name: str
    backend: str
    echo: bool
    group: str
    profile: str
    parameters: dict[str, Any] = field(hash=False)
    content_policy: dict[str, object] | None = field(default=None, hash=False)


def served_model(config: FrugalConfig) -> ServedModel:
    model = config.models[0]
    group = model.groups[0]
    return ServedModel(
        name=model.name,
        backend=model.backend,
        echo=model.echo,
        group=group.name,
        profile=group.profile,
        parameters=dict(config.profiles[group.profile]),
        content_policy=None if model.content_policy is None else dict(model.content_policy),
    )


@dataclass(frozen=True)
class EnginePlan:
    model: ServedModel
    levels: tuple[int, ...] = DEFAULT_LEVELS
    requests_per_stream: int = REQUESTS_PER_STREAM
    min_requests: int = MIN_REQUESTS
    max_tokens: int = MAX_TOKENS
    temperature: float = TEMPERATURE
    warm_up_requests: int = 2
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.levels or any(c < 1 for c in self.levels):
            raise ValueError("concurrency levels must be positive")
        if self.max_tokens < 2:
            raise ValueError("max_tokens must be at least 2 (time between tokens needs two)")
        if self.requests_per_stream < 1 or self.min_requests < 1:
            raise ValueError("request counts must be positive")
        if not 0 <= self.temperature <= 2:
            raise ValueError("temperature must be between 0 and 2")

    def requests_at(self, concurrency: int) -> int:
        return max(concurrency * self.requests_per_stream, self.min_requests)

    def describe(self) -> str:
        return (
            f"closed loop, max({self.requests_per_stream} x streams, {self.min_requests}) "
            f"requests per level after {self.warm_up_requests} warm-up requests per system; "
            f"streamed chat completions of {len(PROMPTS)} fixed prompts in turn, max_tokens "
            f"{self.max_tokens}, temperature {self.temperature:g}"
        )


def stack_config(
    model: ServedModel, ports: GatewayPorts, engine_port: int, redis_dir: str
) -> dict[str, Any]:
    """frugal.yaml of the `frugal` system: the full chain (keys, rate limits, quotas, the
    model's content policy or the default one) in front of one worker of the model."""
    served: dict[str, Any] = {
        "name": model.name,
        "backend": model.backend,
        "echo": model.echo,
        "groups": [
            {
                "name": model.group,
                "profile": model.profile,
                "replicas": [f"127.0.0.1:{engine_port}"],
            }
        ],
    }
    if model.content_policy is not None:
        served["content_policy"] = model.content_policy
    safety_filter = {
        "port": ports.safety_filter,
        "metrics_port": ports.safety_metrics,
        "enforce": True,
    }
    return {
        **gateway_config(
            ports, node_id="frugal-bench-engine", safety_filter=safety_filter, redis_dir=redis_dir
        ),
        "profiles": {model.profile: model.parameters},
        "models": [served],
    }
