"""Which content policy applies to a request: its model's, with its key's merged in.

A model's policy comes from frugal.yaml (`safety_filter.content_policy` and each
model's `content_policy`, handed over as JSON by `frugal up`), with a run-time
override from the admin REST laid over it; an API key's override is merged into it
(the stricter action wins, detectors and terms are united). Each configured policy
states only what differs from frugal.content_checks' DEFAULT_POLICY (every PII and
secret detector, redacting in prompts and output). Overrides are read from Redis
through frugal.policy_store and cached for at most `cache_ttl_s` (CACHE_TTL_S), so
a change made through the admin REST applies within about a second. The cache and the
set of overrides kept fresh are bounded cachetools caches that evict the least recently
used entry when full (lookups are only of served models and authenticated keys, so
their number is that of the keys in use).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from cachetools import TLRUCache, TTLCache
from pydantic import ValidationError

from frugal.content_checks import DEFAULT_POLICY, ContentPolicy, merge
from frugal.policy_store import PolicySpec, PolicyStore, Scope

log = logging.getLogger(__name__)

# Longest life of a cached override: an admin change applies within about a second.
CACHE_TTL_S = 1.0
# Entries of the cache (and of the set kept fresh): one per served model and per key in
# use within ACTIVE_S, each well under 1 KB (an override is a few small fields, most
# entries are "no override"); as many as the key cache's (frugal.keys.store).
DEFAULT_CACHE_ENTRIES = 10_000
ACTIVE_S = 60.0  # an override looked up within this long is kept fresh

Name = tuple[Scope, str]
Cached = tuple[float, PolicySpec | None]  # (deadline on the book's clock, the override)


def _cached_until(_name: Name, value: Cached, _now: float) -> float:
    """The stored deadline, counted from when its read was sent."""
    return value[0]


class PolicyBook:
    """The policy of each model, and of each key that has an override."""

    def __init__(
        self,
        default: ContentPolicy,
        per_model: Mapping[str, ContentPolicy],
        overrides: PolicyStore | None = None,
        cache_ttl_s: float = CACHE_TTL_S,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cache_ttl_s > CACHE_TTL_S:
            raise ValueError("cache_ttl_s above 1 s would delay admin policy changes longer")
        self._default = default
        self._per_model = dict(per_model)
        self._overrides = overrides
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._cache: TLRUCache[Name, Cached] = TLRUCache(cache_entries, _cached_until, clock)
        self._loading: dict[Name, asyncio.Future[PolicySpec | None]] = {}
        # Looked up within ACTIVE_S: kept fresh by `refresh_active`.
        self._used: TTLCache[Name, bool] = TTLCache(cache_entries, ACTIVE_S, clock)

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
        """The override as Redis held it at most `cache_ttl_s` ago. One used in the second
        half of its life is reloaded in the background, so a policy in steady use never
        waits for Redis on the request's path."""
        if self._overrides is None:
            return None
        self._used[(scope, name)] = True
        cached = self._cache.get((scope, name))
        if cached is None:
            return await asyncio.shield(self._loading_of(scope, name))
        if cached[0] - self._clock() < self._cache_ttl_s / 2:
            self._loading_of(scope, name)
        return cached[1]

    async def refresh_active(self) -> None:
        """Reload every override looked up within ACTIVE_S, in one round trip (MGET), so
        a policy in use never waits for Redis on a request's path."""
        if self._overrides is None:
            return
        started = self._clock()
        self._used.expire(started)
        names = list(self._used)
        for which, spec in zip(names, await self._overrides.get_many(names), strict=True):
            self._cache[which] = (started + self._cache_ttl_s, spec)

    def _loading_of(self, scope: Scope, name: str) -> asyncio.Future[PolicySpec | None]:
        loading = self._loading.get((scope, name))
        if loading is None:
            loading = asyncio.ensure_future(self._load(scope, name))
            self._loading[(scope, name)] = loading
            loading.add_done_callback(lambda done: self._loaded((scope, name), done))
        return loading

    async def _load(self, scope: Scope, name: str) -> PolicySpec | None:
        assert self._overrides is not None
        started = self._clock()
        spec = await self._overrides.get(scope, name)
        self._cache[(scope, name)] = (started + self._cache_ttl_s, spec)
        return spec

    def cached_count(self) -> int:
        """How many overrides (and known absences) the cache holds (metrics, tests)."""
        return len(self._cache)

    def _loaded(self, which: Name, done: asyncio.Future[PolicySpec | None]) -> None:
        self._loading.pop(which, None)
        if not done.cancelled():
            done.exception()  # retrieved here, so no "never retrieved" warning

    @classmethod
    def from_config(
        cls,
        data: Mapping[str, Any],
        overrides: PolicyStore | None = None,
        cache_ttl_s: float = CACHE_TTL_S,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
    ) -> PolicyBook:
        """`{"default": {...}, "models": {name: {...}}}`; raises pydantic's ValidationError."""
        default = _over(DEFAULT_POLICY, data.get("default") or {})
        per_model = {
            name: _over(DEFAULT_POLICY, policy)
            for name, policy in (data.get("models") or {}).items()
        }
        return cls(default, per_model, overrides, cache_ttl_s, cache_entries)


def _over(base: ContentPolicy, fields: Mapping[str, Any]) -> ContentPolicy:
    try:
        return ContentPolicy.model_validate({**base.model_dump(), **fields})
    except ValidationError:
        log.error("ignoring an invalid content policy override: %s", dict(fields))
        raise


# No detectors: prompts and output pass unchecked (a stack run with `enforce: false`).
NO_CHECKS = PolicyBook(ContentPolicy(detectors=(), prompt_action="log"), {})
