"""Detectors registered by name: adding a category never touches the callers.

Pure layer of the shared library. A policy names detectors ("EMAIL", "SECRET"...);
`DetectorRegistry.build` turns a name into a detector through the factory its
module registered (detectors/__init__.py). Factories take `DetectorOptions`,
the parameters a policy carries for detectors (today the blocklist terms).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from frugal.content_checks.match import Detector


@dataclass(frozen=True)
class DetectorOptions:
    """Parameters a policy passes to every factory; each uses what it needs."""

    blocklist: tuple[str, ...] = ()


DetectorFactory = Callable[[DetectorOptions], Detector]


class UnknownDetectorError(KeyError):
    """A policy named a detector nobody registered."""


class DetectorRegistry:
    """Name -> factory; names are the categories the detectors report."""

    def __init__(self) -> None:
        self._factories: dict[str, DetectorFactory] = {}

    def register(self, name: str, factory: DetectorFactory) -> None:
        if name in self._factories:
            raise ValueError(f"detector {name!r} registered twice")
        self._factories[name] = factory

    def names(self) -> tuple[str, ...]:
        return tuple(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def build(self, name: str, options: DetectorOptions) -> Detector:
        try:
            factory = self._factories[name]
        except KeyError:
            raise UnknownDetectorError(name) from None
        return factory(options)
