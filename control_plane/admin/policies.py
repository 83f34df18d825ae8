"""Admin REST: content-policy overrides per model and per API key, effective within ~1 s.

Edge layer over frugal.policy_store. A model's override replaces the fields it
names in the model's configured policy; a key's override is merged into the
model's policy for that key's requests (the stricter action wins).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Response

from frugal.policy_store import PolicySpec, PolicyStore, Scope
from frugal.redis_connection import RedisClient

SCOPES: dict[str, Scope] = {"models": "model", "keys": "key"}


def policies_router(redis: RedisClient) -> APIRouter:
    store = PolicyStore(redis)
    router = APIRouter(prefix="/admin/v1/policies", tags=["content policies"])

    @router.get("/{scope}/{name}", response_model=PolicySpec)
    async def get_policy(scope: Literal["models", "keys"], name: str) -> PolicySpec:
        spec = await store.get(SCOPES[scope], name)
        if spec is None:
            raise HTTPException(404, f"no policy override for {scope}/{name}")
        return spec

    @router.put("/{scope}/{name}", response_model=PolicySpec)
    async def put_policy(
        scope: Literal["models", "keys"], name: str, spec: PolicySpec
    ) -> PolicySpec:
        await store.put(SCOPES[scope], name, spec)
        return spec

    @router.delete("/{scope}/{name}", status_code=204)
    async def delete_policy(scope: Literal["models", "keys"], name: str) -> Response:
        if not await store.delete(SCOPES[scope], name):
            raise HTTPException(404, f"no policy override for {scope}/{name}")
        return Response(status_code=204)

    return router
