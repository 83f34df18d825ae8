"""The compose deployment's secrets: the key pepper and the admin token, as files that
`compose.yaml`'s `secrets:` mount into the containers (edge layer: files).

They are made as `frugal up` makes its own (frugal/cli/up.py `prepare_files`), once, and kept
after: a new pepper would invalidate every API key in Redis. Compose mounts a file secret
as a bind mount that keeps the host file's owner and mode (its `uid`/`gid`/`mode` apply to
swarm only), so a 0600 file would be unreadable to the containers' non-root user: the files
are 0644 inside a directory of mode 0700, which keeps other host users out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from frugal.keys.admin_token import ensure_admin_token_file
from frugal.keys.hashing import ensure_pepper_file

DIRECTORY_MODE = 0o700
FILE_MODE = 0o644


@dataclass(frozen=True)
class ComposeSecrets:
    """Where the secrets lie; the file names are the ones compose.yaml's `secrets:` name."""

    directory: Path

    @property
    def pepper(self) -> Path:
        return self.directory / "key-peppers.json"

    @property
    def admin_token(self) -> Path:
        return self.directory / "admin-token"


def ensure_compose_secrets(directory: Path) -> ComposeSecrets:
    """Create the secrets that are missing under `directory` (existing ones are kept)."""
    secrets = ComposeSecrets(directory)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(DIRECTORY_MODE)
    ensure_pepper_file(secrets.pepper)
    ensure_admin_token_file(secrets.admin_token)
    for path in (secrets.pepper, secrets.admin_token):
        path.chmod(FILE_MODE)
    return secrets
