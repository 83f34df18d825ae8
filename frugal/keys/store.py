"""API keys in Redis: create, list, revoke, rotate, and authenticate on the hot path.

I/O layer over the pure `format`, `hashing` and `record` modules; shared by the
safety filter (authenticate) and the control plane's admin API (the rest).
Redis layout (nothing else is written):

    frugal:{key}:rec:<id>   hash, one field per KeyRecord field, each value JSON
    frugal:{key}:ids        set of every key id

The braces are a literal Redis Cluster hash tag: the whole store lives in one slot, so a
create (record and id, one MULTI), a rotate (WATCH the old record, MULTI both records and
the id) and the refresh of every record in use (one pipeline) each reach one node, on a
cluster as on one instance. Records are small and read through the caches below, so one
slot carries them.

Records are never deleted (revocation is a flag), so an id is never reused.
Each process caches records for at most `cache_ttl_s` (0.5 s), so a revocation
made anywhere is honoured everywhere within that plus one Redis round trip. A record
used in the second half of its life is reloaded in the background, so a key in steady
use never waits for Redis on the hot path; the use stamp is written in the background too.

Every per-process table is a bounded cachetools cache of `cache_entries` entries that
evicts the least recently used one when full: a flood of random key ids costs one Redis
round trip each (an unknown id is cached as unknown for `cache_ttl_s` like a record, so
repeating one costs nothing more) and never grows memory past the bound nor pushes out
at once the keys in use, which each lookup and refresh keeps most recent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cachetools import TLRUCache, TTLCache
from pydantic import ValidationError
from redis.exceptions import RedisError, WatchError

from frugal.keys.format import fingerprint, is_key_id, new_key, parse_key
from frugal.keys.hashing import Peppers, hash_secret, verify
from frugal.keys.record import KeyRecord, KeySpec, KeyStatus, utc_now
from frugal.redis_connection import RedisClient

log = logging.getLogger(__name__)

KEY_PREFIX = "frugal:{key}:"
# Longest `cache_ttl_s`: a revoked key is then refused everywhere within 1 s (this plus
# one refresh or round trip).
MAX_CACHE_TTL_S = 0.5
# Entries of each per-process table. A cached record is about 1.7 KB (tracemalloc, a
# record naming two models; an unknown id's entry about 0.3 KB), so a full record cache
# holds about 17 MB; more keys in use than this within ACTIVE_S only cost round trips.
DEFAULT_CACHE_ENTRIES = 10_000
# A key used within this long is kept fresh by `refresh_active` (the safety filter's
# server calls it every 0.2 s), so its requests never wait for its record.
ACTIVE_S = 60.0
# HSET only if the record exists: a late touch or revoke never resurrects a partial hash.
_UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


class KeyNotFoundError(LookupError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id!r}")
        self.key_id = key_id


class KeyStateError(ValueError):
    """The key cannot do this in its current state (e.g. rotate a revoked key)."""


class KeyStoreUnavailable(RuntimeError):
    """Redis did not answer; callers fail closed."""


class AuthOutcome(StrEnum):
    OK = "ok"
    MISSING = "missing"  # no credentials at all (decided by the caller)
    MALFORMED = "malformed"
    UNKNOWN = "unknown"  # no such id, or the secret does not match
    EXPIRED = "expired"  # past expires_at, or past a rotation's overlap
    REVOKED = "revoked"


@dataclass(frozen=True)
class AuthDecision:
    outcome: AuthOutcome
    record: KeyRecord | None = None


_STATUS_OUTCOMES = {
    KeyStatus.ACTIVE: AuthOutcome.OK,
    KeyStatus.ROTATING: AuthOutcome.OK,
    KeyStatus.EXPIRED: AuthOutcome.EXPIRED,
    KeyStatus.REVOKED: AuthOutcome.REVOKED,
}


def _cached_until(_key: str, value: tuple[float, KeyRecord | None], _now: float) -> float:
    """A cached record's end of life: the deadline it was stored with (from when its
    read was sent, so the revocation bound holds however late the answer came)."""
    return value[0]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def encode_record(record: KeyRecord) -> dict[Any, str]:
    return {name: json.dumps(value) for name, value in record.model_dump(mode="json").items()}


def decode_record(raw: Mapping[Any, Any]) -> KeyRecord | None:
    """A record from HGETALL's answer; None when there is none or it is damaged."""
    if not raw:
        return None
    fields = {_text(name): json.loads(_text(value)) for name, value in raw.items()}
    try:
        return KeyRecord.model_validate(fields)
    except ValidationError as error:
        log.error("damaged key record %s: %s", fingerprint(str(fields.get("id"))), error)
        return None


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except RedisError as error:
        raise KeyStoreUnavailable(f"key store unavailable: {error}") from error


class KeyStore:
    def __init__(
        self,
        redis: RedisClient,
        peppers: Peppers,
        cache_ttl_s: float = MAX_CACHE_TTL_S,
        touch_interval_s: float = 10.0,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cache_ttl_s > MAX_CACHE_TTL_S:
            raise ValueError("cache_ttl_s above 0.5 s would let revoked keys live on for > 1 s")
        self._redis = redis
        self._peppers = peppers
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        # id -> (deadline on `clock`, record or None for "no such key")
        self._cache: TLRUCache[str, tuple[float, KeyRecord | None]] = TLRUCache(
            cache_entries, _cached_until, timer=clock
        )
        self._loading: dict[str, asyncio.Future[KeyRecord | None]] = {}
        # Ids whose use was stamped within `touch_interval_s`.
        self._touched: TTLCache[str, bool] = TTLCache(cache_entries, touch_interval_s, clock)
        # Ids of records looked up within ACTIVE_S, which `refresh_active` keeps fresh;
        # unknown ids are left out (a flood of them would make each refresh a flood).
        self._used: TTLCache[str, bool] = TTLCache(cache_entries, ACTIVE_S, clock)
        self._touching: set[asyncio.Future[None]] = set()
        self._update_if_exists = redis.register_script(_UPDATE_IF_EXISTS)

    @staticmethod
    def record_key(key_id: str) -> str:
        return f"{KEY_PREFIX}rec:{key_id}"

    ids_key = f"{KEY_PREFIX}ids"

    # -- admin operations (always read Redis) ---------------------------------------------

    async def create(
        self,
        name: str,
        tenant: str,
        models: list[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new key; the plaintext is returned here once and stored nowhere."""
        spec = KeySpec(
            name=name, tenant=tenant, models=models, rpm=rpm, tpm=tpm, expires_at=expires_at
        )
        return await self.create_from_spec(spec)

    async def create_from_spec(
        self, spec: KeySpec, replaces: str | None = None
    ) -> tuple[KeyRecord, str]:
        record, plaintext = self._mint(spec, replaces)
        with _redis_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.record_key(record.id), mapping=encode_record(record))
                pipe.sadd(self.ids_key, record.id)
                await pipe.execute()
        log.info("created API key %s for tenant %s", fingerprint(record.id), record.tenant)
        return record, plaintext

    def _mint(self, spec: KeySpec, replaces: str | None) -> tuple[KeyRecord, str]:
        issued = new_key()
        version = self._peppers.current
        record = KeyRecord(
            id=issued.key_id,
            **spec.model_dump(),
            created_at=utc_now(),
            replaces=replaces,
            secret_hash=hash_secret(issued.secret, self._peppers, version),
            pepper_version=version,
        )
        return record, issued.plaintext

    async def get(self, key_id: str) -> KeyRecord | None:
        if not is_key_id(key_id):
            return None
        with _redis_errors():
            return decode_record(await self._redis.hgetall(self.record_key(key_id)))

    async def list(self) -> list[KeyRecord]:
        """Every key, oldest first."""
        with _redis_errors():
            ids = sorted(_text(i) for i in await self._redis.smembers(self.ids_key))
            async with self._redis.pipeline(transaction=False) as pipe:
                for key_id in ids:
                    pipe.hgetall(self.record_key(key_id))
                answers = await pipe.execute()
        records = [r for raw in answers if (r := decode_record(raw)) is not None]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    async def revoke(self, key_id: str) -> KeyRecord:
        """Refuse the key from now on (idempotent); other processes follow within 1 s."""
        now = json.dumps(utc_now().isoformat())
        with _redis_errors():
            found = await self._update_if_exists(
                keys=[self.record_key(key_id)], args=["revoked", "true", "revoked_at", now]
            )
        self._cache.pop(key_id, None)
        if not found:
            raise KeyNotFoundError(key_id)
        log.info("revoked API key %s", fingerprint(key_id))
        return await self._require(key_id)

    async def rotate(self, key_id: str, overlap_s: float) -> tuple[KeyRecord, str]:
        """A successor with the same grants; the old key works until now + overlap_s."""
        if overlap_s < 0:
            raise ValueError("overlap_s must be >= 0")
        old_key = self.record_key(key_id)
        with _redis_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(old_key)
                        old = decode_record(await pipe.hgetall(old_key))
                        if old is None:
                            raise KeyNotFoundError(key_id)
                        self._check_rotatable(old)
                        new, plaintext = self._mint(old.spec(), replaces=old.id)
                        valid_until = utc_now() + timedelta(seconds=overlap_s)
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.hset(self.record_key(new.id), mapping=encode_record(new))
                        pipe.sadd(self.ids_key, new.id)
                        pipe.hset(old_key, mapping={
                            "replaced_by": json.dumps(new.id),
                            "valid_until": json.dumps(valid_until.isoformat()),
                        })  # fmt: skip
                        await pipe.execute()
                        break
                    except WatchError:
                        continue  # the old record changed under us: look again
        self._cache.pop(key_id, None)
        log.info(
            "rotated API key %s -> %s (overlap %.0f s)",
            fingerprint(key_id),
            fingerprint(new.id),
            overlap_s,
        )
        return new, plaintext

    @staticmethod
    def _check_rotatable(old: KeyRecord) -> None:
        status = old.status(utc_now())
        if status in (KeyStatus.REVOKED, KeyStatus.EXPIRED):
            raise KeyStateError(f"key {old.id} is {status.value} and cannot be rotated")
        if old.replaced_by is not None:
            raise KeyStateError(f"key {old.id} was already rotated to {old.replaced_by}")

    async def _require(self, key_id: str) -> KeyRecord:
        record = await self.get(key_id)
        if record is None:
            raise KeyNotFoundError(key_id)
        return record

    # -- hot path (cached) ----------------------------------------------------------------

    async def authenticate(self, plaintext: str) -> KeyRecord | None:
        """The key's record if it may be used now; None otherwise (no reason given)."""
        decision = await self.check(plaintext)
        return decision.record if decision.outcome is AuthOutcome.OK else None

    async def check(self, plaintext: str) -> AuthDecision:
        """Authenticate and say why not: parse, look up by id, compare hashes, then validity."""
        parsed = parse_key(plaintext)
        if parsed is None:
            return AuthDecision(AuthOutcome.MALFORMED)
        record = await self.get_cached(parsed.key_id)
        if record is None or not verify(
            parsed.secret, record.secret_hash, record.pepper_version, self._peppers
        ):
            return AuthDecision(AuthOutcome.UNKNOWN)
        outcome = _STATUS_OUTCOMES[record.status(utc_now())]
        if outcome is AuthOutcome.OK:
            self._touch_later(record.id)
        return AuthDecision(outcome, record)

    async def get_cached(self, key_id: str) -> KeyRecord | None:
        """The record as Redis held it at most `cache_ttl_s` ago (None: no such key)."""
        if not is_key_id(key_id):
            return None
        cached = self._cache.get(key_id)
        if cached is None:
            record = await asyncio.shield(self._loading_of(key_id))
        else:
            if cached[0] - self._clock() < self._cache_ttl_s / 2:
                self._loading_of(key_id)  # refresh ahead; this request keeps the cached one
            record = cached[1]
        if record is not None:
            self._used[key_id] = True
        return record

    async def refresh_active(self) -> None:
        """Reload every record looked up within ACTIVE_S, in one round trip (a pipeline).
        Each is cached as Redis held it when the pipeline was sent, so the revocation
        bound holds. Raises KeyStoreUnavailable when Redis does not answer."""
        started = self._clock()
        self._used.expire(started)
        ids = list(self._used)
        if not ids:
            return
        with _redis_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                for key_id in ids:
                    pipe.hgetall(self.record_key(key_id))
                answers = await pipe.execute()
        for key_id, raw in zip(ids, answers, strict=True):
            self._cache[key_id] = (started + self._cache_ttl_s, decode_record(raw))

    def _loading_of(self, key_id: str) -> asyncio.Future[KeyRecord | None]:
        """The load of `key_id` in flight, started if none is: concurrent misses for one id
        share one Redis round trip."""
        loading = self._loading.get(key_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load(key_id))
            self._loading[key_id] = loading
            loading.add_done_callback(lambda done: self._loaded(key_id, done))
        return loading

    async def _load(self, key_id: str) -> KeyRecord | None:
        started = self._clock()
        with _redis_errors():
            record = decode_record(await self._redis.hgetall(self.record_key(key_id)))
        self._cache[key_id] = (started + self._cache_ttl_s, record)
        return record

    def _loaded(self, key_id: str, done: asyncio.Future[KeyRecord | None]) -> None:
        self._loading.pop(key_id, None)
        if not done.cancelled():
            done.exception()  # retrieved here, so no "never retrieved" warning if all waiters left

    def _touch_later(self, key_id: str) -> None:
        """Record use at most once per `touch_interval_s` per key and process, off the
        request's path."""
        if key_id in self._touched:
            return
        self._touched[key_id] = True
        task = asyncio.ensure_future(self._touch(key_id))
        self._touching.add(task)
        task.add_done_callback(self._touching.discard)

    async def touched(self) -> None:
        """Wait for the use stamps written in the background (shutdown, tests)."""
        await asyncio.gather(*self._touching)

    async def _touch(self, key_id: str) -> None:
        stamp = json.dumps(utc_now().isoformat())
        try:
            await self._update_if_exists(
                keys=[self.record_key(key_id)], args=["last_used_at", stamp]
            )
        except RedisError as error:  # the request is authenticated; the stamp can wait
            log.warning("could not record use of key %s: %s", fingerprint(key_id), error)

    def cached_count(self) -> int:
        """How many ids the record cache holds (known and unknown; metrics, tests)."""
        return len(self._cache)

    def forget_cached(self, key_id: str | None = None) -> None:
        """Drop cached records (one id, or all)."""
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(key_id, None)
