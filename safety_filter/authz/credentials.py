"""Finding the API key in a request's headers.

Pure layer. OpenAI clients send `Authorization: Bearer <key>`; some tools send
`x-api-key: <key>` (Anthropic-style). Envoy hands ext_proc header names lowercased
(HTTP/2 requires it; HTTP/1 names are lowercased by its codec).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

AUTHORIZATION = "authorization"
X_API_KEY = "x-api-key"
CREDENTIAL_HEADERS = (AUTHORIZATION, X_API_KEY)


@dataclass(frozen=True)
class Credentials:
    """What the client presented: a candidate key, or why there is none."""

    key: str | None
    missing: bool = False  # no credential header at all (else: present but not a Bearer token)

    def __repr__(self) -> str:  # never show the key itself
        return f"Credentials(present={self.key is not None}, missing={self.missing})"


def find_credentials(headers: Mapping[str, str]) -> Credentials:
    """`Authorization: Bearer <key>` first, then `x-api-key`; anything else is malformed."""
    authorization = headers.get(AUTHORIZATION, "").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return Credentials(key=token.strip())
    if api_key := headers.get(X_API_KEY, "").strip():
        return Credentials(key=api_key)
    return Credentials(key=None, missing=not authorization)
