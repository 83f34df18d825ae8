"""Which content policy applies to a request: the model's own, or the default.

Pure layer. Policies come from frugal.yaml (`safety_filter.content_policy` and each
model's `content_policy`), handed to the safety filter as JSON by `frugal up`; an
policy states only what differs from safety_filter.checks' DEFAULT_POLICY (every
PII and secret detector, redacting in prompts and output).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from safety_filter.checks import DEFAULT_POLICY, ContentPolicy


class PolicyBook:
    """The policy of each model."""

    def __init__(self, default: ContentPolicy, per_model: Mapping[str, ContentPolicy]) -> None:
        self._default = default
        self._per_model = dict(per_model)

    def for_model(self, model: str) -> ContentPolicy:
        return self._per_model.get(model, self._default)

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> PolicyBook:
        """`{"default": {...}, "models": {name: {...}}}`; raises pydantic's ValidationError.

        Each policy states only what differs from DEFAULT_POLICY (e.g. just its actions).
        """
        default = _over_default(data.get("default") or {})
        per_model = {
            name: _over_default(policy) for name, policy in (data.get("models") or {}).items()
        }
        return cls(default, per_model)


def _over_default(fields: Mapping[str, Any]) -> ContentPolicy:
    return ContentPolicy.model_validate({**DEFAULT_POLICY.model_dump(), **fields})


# No detectors: prompts and output pass unchecked (a stack run with `enforce: false`).
NO_CHECKS = PolicyBook(ContentPolicy(detectors=(), prompt_action="log"), {})
