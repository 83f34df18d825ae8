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
from fastapi.security.utils import get_authorization_scheme_param

from control_plane.admin.errors import invalid_admin_token
from frugal.keys.admin_token import (
    MIN_TOKEN_LENGTH,
    ensure_admin_token_file,
    load_admin_token,
)

__all__ = [
    "ensure_admin_token_file",
    "load_admin_token",
    "require_admin_token",
    "token_matcher",
]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The admin token ($FRUGAL_ADMIN_TOKEN or the file $FRUGAL_ADMIN_TOKEN_FILE).",
)


def token_matcher(token: str) -> Callable[[str | None], bool]:
    """Whether an `Authorization` header value is `Bearer <token>`, compared in constant time."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the admin token must be at least {MIN_TOKEN_LENGTH} characters")
    expected = token.encode("utf-8")

    def matches(authorization: str | None) -> bool:
        scheme, credentials = get_authorization_scheme_param(authorization)
        presented = credentials.encode("utf-8") if scheme.lower() == "bearer" else b""
        return hmac.compare_digest(presented, expected)

    return matches


def require_admin_token(token: str) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency refusing (401) any request without `Authorization: Bearer <token>`
    (it also puts the scheme in the OpenAPI document)."""
    matches = token_matcher(token)

    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> None:
        if credentials is None or not matches(f"Bearer {credentials.credentials}"):
            raise invalid_admin_token()

    return check
