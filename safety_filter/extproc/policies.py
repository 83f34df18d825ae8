"""Which content policy applies to a request: its model's, with its key's merged in.

A model's policy comes from frugal.yaml (`safety_filter.content_policy` and each
model's `content_policy`, handed over as JSON by `frugal up`), with a run-time
override from the admin REST laid over it; an API key's override is merged into it
(the stricter action wins, detectors and terms are united). Each configured policy
states only what differs from frugal.content_checks' DEFAULT_POLICY (every PII and
secret detector, redacting in prompts and output). Overrides are read from Redis
through frugal.policy_store and cached for CACHE_TTL_S, so a change made through
the admin REST applies within about a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from frugal.content_checks import DEFAULT_POLICY, ContentPolicy, merge
from frugal.policy_store import PolicySpec, PolicyStore, Scope

log = logging.getLogger(__name__)

CACHE_TTL_S = 1.0
MAX_CACHED = 100_000
ACTIVE_S = 60.0  # an override looked up within this long is kept fresh


class PolicyBook:
    """The policy of each model, and of each key that has an override."""

    def __init__(
        self,
        default: ContentPolicy,
        per_model: Mapping[str, ContentPolicy],
        overrides: PolicyStore | None = None,
    ) -> None:
        self._default = default
        self._per_model = dict(per_model)
        self._overrides = overrides
        self._cache: dict[tuple[Scope, str], tuple[float, PolicySpec | None]] = {}
        self._loading: dict[tuple[Scope, str], asyncio.Future[PolicySpec | None]] = {}
        self._used: dict[tuple[Scope, str], float] = {}  # last lookup (monotonic)

    def for_model(self, model: str) -> ContentPolicy:
        """The configured policy of `model` (without run-time overrides)."""
        return self._per_model.get(model, self._default)

    async def policy_for(self, model: str, key_id: str | None) -> ContentPolicy:
        policy = self.for_model(model)
        model_override = await self._override("model", model)
        if model_override is not None:
            policy = _over(policy, model_override.fields())
        key_override = await self._override("key", key_id) if key_id else None
        if key_override is not None:
            # A key's override only ever adds strictness: what it leaves out is the loosest.
            least = ContentPolicy(
                detectors=(), prompt_action="log", output_action="redact", check_output=False
            )
            policy = merge(policy, _over(least, key_override.fields()))
        return policy

    async def _override(self, scope: Scope, name: str) -> PolicySpec | None:
        """The override as Redis held it at most CACHE_TTL_S ago. One used in the second
        half of its life is reloaded in the background, so a policy in steady use never
        waits for Redis on the request's path."""
        if self._overrides is None:
            return None
        if len(self._used) >= MAX_CACHED:
            self._used.clear()
        self._used[(scope, name)] = time.monotonic()
        cached = self._cache.get((scope, name))
        if cached is not None and cached[0] > time.monotonic():
            if cached[0] - time.monotonic() < CACHE_TTL_S / 2:
                self._loading_of(scope, name)
            return cached[1]
        return await asyncio.shield(self._loading_of(scope, name))

    async def refresh_active(self) -> None:
        """Reload every override looked up within ACTIVE_S, in one round trip (MGET), so
        a policy in use never waits for Redis on a request's path."""
        if self._overrides is None:
            return
        started = time.monotonic()
        for stale in [k for k, used in self._used.items() if started - used >= ACTIVE_S]:
            del self._used[stale]
        names = list(self._used)
        for which, spec in zip(names, await self._overrides.get_many(names), strict=True):
            self._cache[which] = (started + CACHE_TTL_S, spec)

    def _loading_of(self, scope: Scope, name: str) -> asyncio.Future[PolicySpec | None]:
        loading = self._loading.get((scope, name))
        if loading is None:
            loading = asyncio.ensure_future(self._load(scope, name))
            self._loading[(scope, name)] = loading
            loading.add_done_callback(lambda done: self._loaded((scope, name), done))
        return loading

    async def _load(self, scope: Scope, name: str) -> PolicySpec | None:
        assert self._overrides is not None
        spec = await self._overrides.get(scope, name)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()  # bounded memory under a flood of key ids
        self._cache[(scope, name)] = (time.monotonic() + CACHE_TTL_S, spec)
        return spec

    def _loaded(self, which: tuple[Scope, str], done: asyncio.Future[PolicySpec | None]) -> None:
        self._loading.pop(which, None)
        if not done.cancelled():
            done.exception()  # retrieved here, so no "never retrieved" warning

    @classmethod
    def from_config(
        cls, data: Mapping[str, Any], overrides: PolicyStore | None = None
    ) -> PolicyBook:
        """`{"default": {...}, "models": {name: {...}}}`; raises pydantic's ValidationError."""
        default = _over(DEFAULT_POLICY, data.get("default") or {})
        per_model = {
            name: _over(DEFAULT_POLICY, policy)
            for name, policy in (data.get("models") or {}).items()
        }
        return cls(default, per_model, overrides)


def _over(base: ContentPolicy, fields: Mapping[str, Any]) -> ContentPolicy:
    try:
        return ContentPolicy.model_validate({**base.model_dump(), **fields})
    except ValidationError:
        log.error("ignoring an invalid content policy override: %s", dict(fields))
        raise


# No detectors: prompts and output pass unchecked (a stack run with `enforce: false`).
NO_CHECKS = PolicyBook(ContentPolicy(detectors=(), prompt_action="log"), {})
