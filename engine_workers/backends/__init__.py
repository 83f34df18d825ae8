"""Engine backends, registered by name (backend layer).

`settings.backend` names the factory; adding an engine is one module plus one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine_workers.backends.sim import build_sim_backend
from engine_workers.engine import EngineBackend

if TYPE_CHECKING:
    from engine_workers.settings import EngineSettings

BackendFactory = Callable[["EngineSettings"], EngineBackend]

BACKENDS: dict[str, BackendFactory] = {
    "sim": build_sim_backend,
}


def build_backend(settings: EngineSettings) -> EngineBackend:
    try:
        factory = BACKENDS[settings.backend]
    except KeyError:
        raise ValueError(
            f"unknown engine backend {settings.backend!r}; known: {sorted(BACKENDS)}"
        ) from None
    return factory(settings)
