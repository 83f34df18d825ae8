"""API keys shared by the safety filter (authenticate) and the control plane (administer).

Layers: `format`, `hashing`, `record` are pure; `store` is the Redis I/O edge;
`admin_token` reads and creates the admin API's token file.
"""

from frugal.keys.admin_token import AdminTokenError, ensure_admin_token_file, load_admin_token
from frugal.keys.format import IssuedKey, ParsedKey, fingerprint, new_key, parse_key
from frugal.keys.hashing import (
    PepperError,
    Peppers,
    ensure_pepper_file,
    hash_secret,
    load_peppers,
    verify,
)
from frugal.keys.record import KeyRecord, KeySpec, KeyStatus, KeyView
from frugal.keys.store import (
    AuthDecision,
    AuthOutcome,
    KeyNotFoundError,
    KeyStateError,
    KeyStore,
    KeyStoreUnavailable,
)

__all__ = [
    "AdminTokenError",
    "AuthDecision",
    "AuthOutcome",
    "IssuedKey",
    "KeyNotFoundError",
    "KeyRecord",
    "KeySpec",
    "KeyStateError",
    "KeyStatus",
    "KeyStore",
    "KeyStoreUnavailable",
    "KeyView",
    "ParsedKey",
    "PepperError",
    "Peppers",
    "ensure_admin_token_file",
    "ensure_pepper_file",
    "fingerprint",
    "hash_secret",
    "load_admin_token",
    "load_peppers",
    "new_key",
    "parse_key",
    "verify",
]
