"""The safety filter's cache settings refuse values that would break the caches' bounds:
a key cache longer than the revocation bound, a policy cache longer than an admin change's."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from safety_filter.settings import SafetyFilterSettings


@pytest.mark.parametrize(
    "field", [{"key_cache_ttl_s": 0.6}, {"policy_cache_ttl_s": 1.5}, {"cache_entries": 0}]
)
def test_a_cache_setting_past_its_bound_is_refused(field: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        SafetyFilterSettings(**field)  # type: ignore[arg-type]


def test_the_defaults_are_the_bounds() -> None:
    settings = SafetyFilterSettings()
    assert (settings.key_cache_ttl_s, settings.policy_cache_ttl_s) == (0.5, 1.0)
