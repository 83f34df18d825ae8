"""Redis keys of earlier Frugal versions, renamed once to today's names (I/O, shared library).

API keys and policy overrides were stored without a hash tag (`frugal:key:...`,
`frugal:policy:...`) until every Redis access became cluster-safe; they now live under
`frugal:{key}:...` and `frugal:{policy}:...` (frugal/keys/store.py, frugal/policy_store.py).
The control plane renames what an older version left, at start, before it serves Envoy,
so keys created before an upgrade keep working. One Redis instance only: a Redis Cluster
was never written with the old names, and a rename across slots would fail there.
"""

from __future__ import annotations

from redis.asyncio import Redis

from frugal.keys.store import KEY_PREFIX
from frugal.policy_store import POLICY_PREFIX

# (old prefix, today's prefix)
RENAMED_PREFIXES = (("frugal:key:", KEY_PREFIX), ("frugal:policy:", POLICY_PREFIX))
# Set once the rename is done, beside the key store's own keys: later starts skip the SCAN,
# which reads the whole keyspace (the counters and the ledger included).
RENAMED_KEY = f"{KEY_PREFIX}names-renamed"


async def rename_old_keys(redis: Redis) -> int:
    """Rename every key under an old prefix, once per Redis; a key that exists under both
    names keeps today's (it is the newer). Returns how many keys were renamed."""
    if await redis.exists(RENAMED_KEY):
        return 0
    renamed = 0
    for old, new in RENAMED_PREFIXES:
        async for raw in redis.scan_iter(match=f"{old}*", count=500):
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            if await redis.renamenx(name, new + name[len(old) :]):
                renamed += 1
            else:
                await redis.delete(name)
    await redis.set(RENAMED_KEY, 1)
    return renamed
