"""Where the tests and `frugal up` find Envoy (frugal.cli.stack.find_envoy), and that a test
needing it fails, never skips, when it is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from frugal.cli import stack
from tests import conftest


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository without .venv-envoy, no FRUGAL_ENVOY_BIN, nothing on PATH."""
    monkeypatch.setattr(stack, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.delenv("FRUGAL_ENVOY_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    return tmp_path


def test_the_repositorys_own_envoy_is_found_wherever_it_is_cloned(nowhere: Path) -> None:
    envoy = _executable(nowhere / "repo" / ".venv-envoy" / "bin" / "envoy")
    assert stack.find_envoy() == str(envoy)


def test_frugal_envoy_bin_comes_first(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _executable(nowhere / "repo" / ".venv-envoy" / "bin" / "envoy")
    chosen = _executable(nowhere / "elsewhere" / "envoy")
    monkeypatch.setenv("FRUGAL_ENVOY_BIN", str(chosen))
    assert stack.find_envoy() == str(chosen)


def test_then_path(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = _executable(nowhere / "bin" / "envoy")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert stack.find_envoy() == str(on_path)


@pytest.mark.usefixtures("nowhere")
def test_a_missing_envoy_fails_the_tests_that_need_it() -> None:
    with pytest.raises(pytest.fail.Exception, match="needs the real Envoy"):
        conftest.stack_binaries.__wrapped__()  # type: ignore[attr-defined]
