"""Engine backends, registered by name (backend layer).

`settings.backend` names the entry; adding an engine is one module plus one entry here. An
entry names the pydantic model of its replica groups' profiles (`parameters`, validated by
`frugal up` before anything starts, with the field's name in the error) and the module of its
factory, imported only when a worker builds that backend: torch, transformers and
TensorRT-LLM stay out of every process that does not run them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel

from engine_workers.backends.openai_upstream_parameters import OpenAIUpstreamParameters
from engine_workers.backends.sim_model import SimProfile
from engine_workers.backends.transformers_parameters import TransformersParameters
from engine_workers.backends.trtllm_parameters import TrtllmParameters

if TYPE_CHECKING:
    from engine_workers.engine import EngineBackend
    from engine_workers.settings import EngineSettings

BackendFactory = Callable[["EngineSettings"], "EngineBackend"]


@dataclass(frozen=True, slots=True)
class BackendEntry:
    parameters: type[BaseModel]
    factory: str  # "module:function"

    def load_factory(self) -> BackendFactory:
        module, _, name = self.factory.partition(":")
        return cast(BackendFactory, getattr(importlib.import_module(module), name))


BACKENDS: dict[str, BackendEntry] = {
    "sim": BackendEntry(SimProfile, "engine_workers.backends.sim:build_sim_backend"),
    "openai": BackendEntry(
        OpenAIUpstreamParameters, "engine_workers.backends.openai_upstream:build_openai_backend"
    ),
    "trtllm": BackendEntry(TrtllmParameters, "engine_workers.backends.trtllm:build_trtllm_backend"),
    "transformers": BackendEntry(
        TransformersParameters, "engine_workers.backends.hf_transformers:build_transformers_backend"
    ),
}


def backend_entry(name: str) -> BackendEntry:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown engine backend {name!r}; known: {sorted(BACKENDS)}") from None


def validate_parameters(backend: str, parameters: dict[str, Any]) -> BaseModel:
    """A group profile as its backend reads it; raises ValueError or pydantic's error."""
    return backend_entry(backend).parameters.model_validate(parameters)


def build_backend(settings: EngineSettings) -> EngineBackend:
    return backend_entry(settings.backend).load_factory()(settings)
