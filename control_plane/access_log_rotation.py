"""Rotating Envoy's access log by size: rename the full file, then have Envoy reopen it.

`plan_rotation` is the pure decision (which renames, in which order);
`AccessLogRotator` is the I/O around it: every few seconds it looks at the file's
size, applies the plan, and POSTs /reopen_logs to Envoy's admin (Envoy keeps
writing to the renamed file until then, and writes what it still had buffered to
the new one, so no line is lost). Envoy refuses a listener whose access log it
cannot open, so `prepare_access_log` creates the directory and the file before
the first snapshot is served.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from control_plane.model import AccessLogConfig

log = logging.getLogger(__name__)

LIVE = 0  # index of the file Envoy writes; n > 0 is the n-th newest backup


class AccessLogError(Exception):
    """The access log cannot be written; the message names the path."""


@dataclass(frozen=True)
class Rotation:
    """Renames (from index, to index) to apply in order, then whether to delete the live file."""

    renames: tuple[tuple[int, int], ...]
    delete_live: bool = False


def plan_rotation(
    size: int, max_bytes: int, backups: int, present: Iterable[int]
) -> Rotation | None:
    """What to do with a live file of `size` bytes when backups `present` exist; None: nothing.

    Oldest first, so no rename overwrites a file that still has to move: with 3
    backups, .2 -> .3 (replacing the oldest), .1 -> .2, live -> .1.
    """
    if max_bytes == 0 or size <= max_bytes:
        return None
    if backups == 0:
        return Rotation(renames=(), delete_live=True)
    existing = set(present)
    shifts = tuple((n, n + 1) for n in range(backups - 1, 0, -1) if n in existing)
    return Rotation(renames=(*shifts, (LIVE, 1)))


def backup_path(path: Path, index: int) -> Path:
    return path if index == LIVE else path.with_name(f"{path.name}.{index}")


def prepare_access_log(path: Path) -> None:
    """Create the log's directory and file: Envoy refuses a listener whose log it cannot open."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError as error:
        raise AccessLogError(f"access_log.path: cannot write {path}: {error.strerror}") from error


class AccessLogRotator:
    """Checks the live file every `config.check_interval_s` and rotates it when full."""

    def __init__(self, config: AccessLogConfig, envoy_admin_urls: Iterable[str]) -> None:
        self._config = config
        self._path = Path(config.path)
        self._admin_urls = tuple(envoy_admin_urls)
        self._client = httpx.AsyncClient(timeout=2.0, trust_env=False)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._config.check_interval_s)
            try:
                await self.check()
            except OSError as error:
                log.warning("access log rotation of %s failed: %s", self._path, error)

    async def check(self) -> bool:
        """Rotate now if the file is full; True if it did."""
        try:
            size = self._path.stat().st_size
        except FileNotFoundError:
            # Removed from outside: Envoy writes to a file no one can see until it reopens.
            self._path.parent.mkdir(parents=True, exist_ok=True)
            await self._reopen()
            return False
        present = [n for n in range(1, self._config.backups + 1) if self._backup(n).exists()]
        plan = plan_rotation(size, self._config.max_bytes, self._config.backups, present)
        if plan is None:
            return False
        for source, target in plan.renames:
            self._backup(source).replace(self._backup(target))
        if plan.delete_live:
            self._path.unlink(missing_ok=True)
        await self._reopen()
        log.info("rotated the access log %s (%d bytes)", self._path, size)
        return True

    def _backup(self, index: int) -> Path:
        return backup_path(self._path, index)

    async def _reopen(self) -> None:
        for url in self._admin_urls:
            try:
                response = await self._client.post(f"{url}/reopen_logs")
            except httpx.HTTPError as error:
                log.warning("%s/reopen_logs: %s", url, error)
                continue
            if response.status_code != 200:
                log.warning("%s/reopen_logs answered %d", url, response.status_code)

    async def close(self) -> None:
        await self._client.aclose()
