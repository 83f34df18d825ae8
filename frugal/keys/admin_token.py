"""The admin API's bearer token: where it comes from, and creating one.

Edge layer (environment and files), shared by the control plane's admin REST
(which checks the token) and `frugal keys` (which sends it).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from frugal.keys.hashing import write_secret_file

ADMIN_TOKEN_ENV = "FRUGAL_ADMIN_TOKEN"
ADMIN_TOKEN_FILE_ENV = "FRUGAL_ADMIN_TOKEN_FILE"
MIN_TOKEN_LENGTH = 16


class AdminTokenError(ValueError):
    """No usable admin token is configured."""


def load_admin_token(
    environ: Mapping[str, str] | None = None, default_file: Path | None = None
) -> str:
    """$FRUGAL_ADMIN_TOKEN, else the file named by $FRUGAL_ADMIN_TOKEN_FILE, else
    `default_file` if it exists."""
    env = os.environ if environ is None else environ
    token = env.get(ADMIN_TOKEN_ENV, "").strip()
    path = env.get(ADMIN_TOKEN_FILE_ENV)
    if not path and default_file is not None and default_file.exists():
        path = str(default_file)
    if not token and path:
        try:
            token = Path(path).read_text().strip()
        except OSError as error:
            raise AdminTokenError(
                f"cannot read {ADMIN_TOKEN_FILE_ENV}={path}: {error.strerror}"
            ) from None
    if not token:
        raise AdminTokenError(f"set {ADMIN_TOKEN_ENV} or {ADMIN_TOKEN_FILE_ENV}")
    if len(token) < MIN_TOKEN_LENGTH:
        raise AdminTokenError(f"the admin token must be at least {MIN_TOKEN_LENGTH} characters")
    return token


def ensure_admin_token_file(path: Path) -> Path:
    """Create `path` (mode 0600) with a fresh random token, unless it exists."""
    write_secret_file(path, f"frugal-admin-{secrets.token_urlsafe(32)}\n")
    return path
