"""Admin REST for API keys: create, list, show, revoke, rotate (`/admin/v1/keys`).

Edge layer: validates requests, calls the shared KeyStore (frugal.keys) and
shows KeyViews, never a secret's hash. A key's plaintext appears in exactly two
answers, the one that creates it and the one that rotates to it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Request, status
from pydantic import BaseModel, Field, field_validator

from control_plane.admin.errors import key_not_found
from frugal.keys import KeySpec, KeyStore, KeyView
from frugal.keys.record import utc_now

log = logging.getLogger(__name__)

MAX_OVERLAP_S = 7 * 24 * 3600

router = APIRouter(prefix="/admin/v1/keys", tags=["keys"])


def key_store(request: Request) -> KeyStore:
    store: KeyStore = request.app.state.key_store
    return store


Store = Annotated[KeyStore, Depends(key_store)]


class CreateKeyRequest(KeySpec):
    """A new key's grants and limits; `models` null means every model."""

    @field_validator("expires_at", mode="after")
    @classmethod
    def _in_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= utc_now():
            raise ValueError("must be in the future")
        return value


class RotateKeyRequest(BaseModel):
    overlap_s: int = Field(
        default=300,
        ge=0,
        le=MAX_OVERLAP_S,
        description="How long the old key keeps working, in seconds.",
    )


class CreatedKey(BaseModel):
    key: str = Field(description="The API key. Shown only in this answer: store it now.")
    record: KeyView


class RotatedKey(CreatedKey):
    previous: KeyView


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyView]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CreatedKey)
async def create_key(body: CreateKeyRequest, store: Store) -> CreatedKey:
    record, plaintext = await store.create_from_spec(body)
    return CreatedKey(key=plaintext, record=record.view())


@router.get("", response_model=KeyList)
async def list_keys(store: Store) -> KeyList:
    now = utc_now()
    return KeyList(data=[record.view(now) for record in await store.list()])


@router.get("/{key_id}", response_model=KeyView)
async def get_key(key_id: str, store: Store) -> KeyView:
    record = await store.get(key_id)
    if record is None:
        raise key_not_found(key_id)
    return record.view()


@router.post("/{key_id}/revoke", response_model=KeyView)
async def revoke_key(key_id: str, store: Store) -> KeyView:
    return (await store.revoke(key_id)).view()


@router.post("/{key_id}/rotate", status_code=status.HTTP_201_CREATED, response_model=RotatedKey)
async def rotate_key(
    key_id: str,
    store: Store,
    body: Annotated[RotateKeyRequest | None, Body()] = None,
) -> RotatedKey:
    overlap_s = (body or RotateKeyRequest()).overlap_s
    record, plaintext = await store.rotate(key_id, overlap_s)
    previous = await store.get(key_id)
    if previous is None:  # records are never deleted; only a flushed Redis gets here
        raise key_not_found(key_id)
    return RotatedKey(key=plaintext, record=record.view(), previous=previous.view())
