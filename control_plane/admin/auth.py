"""The admin API's bearer-token check (every route depends on it).

Edge layer. The token comes from $FRUGAL_ADMIN_TOKEN or the file named by
$FRUGAL_ADMIN_TOKEN_FILE (frugal.keys.admin_token, shared with `frugal keys`);
it is compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from control_plane.admin.errors import invalid_admin_token
from frugal.keys.admin_token import (
    MIN_TOKEN_LENGTH,
    ensure_admin_token_file,
    load_admin_token,
)

__all__ = ["ensure_admin_token_file", "load_admin_token", "require_admin_token"]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The admin token ($FRUGAL_ADMIN_TOKEN or the file $FRUGAL_ADMIN_TOKEN_FILE).",
)


def require_admin_token(token: str) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency refusing (401) any request without `Authorization: Bearer <token>`."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the admin token must be at least {MIN_TOKEN_LENGTH} characters")
    expected = token.encode("utf-8")

    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> None:
        presented = b"" if credentials is None else credentials.credentials.encode("utf-8")
        if not hmac.compare_digest(presented, expected):
            raise invalid_admin_token()

    return check
