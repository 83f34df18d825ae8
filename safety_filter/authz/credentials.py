"""Finding the API key in a request's headers.

Pure layer. OpenAI clients send `Authorization: Bearer <key>`; some tools send
`x-api-key: <key>` (Anthropic-style). Envoy lowercases header names in the
CheckRequest (envoy/service/auth/v3/attribute_context.proto, HttpRequest.headers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


def request_headers(http_request: Any) -> dict[str, str]:
    """Header map of an AttributeContext.HttpRequest: `headers`, or `header_map` when Envoy
    is configured with `encode_raw_headers` (then values may be raw bytes)."""
    headers = {key.lower(): value for key, value in http_request.headers.items()}
    for header in http_request.header_map.headers:
        value = header.value or header.raw_value.decode("utf-8", "replace")
        headers.setdefault(header.key.lower(), value)
    return headers


def find_credentials(headers: Mapping[str, str]) -> Credentials:
    """`Authorization: Bearer <key>` first, then `x-api-key`; anything else is malformed."""
    authorization = headers.get(AUTHORIZATION, "").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return Credentials(key=token.strip())
    if api_key := headers.get(X_API_KEY, "").strip():
        return Credentials(key=api_key)
    return Credentials(key=None, missing=not authorization)
