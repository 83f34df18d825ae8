"""Port conventions of the wire contract (frugal.wire), as each process reads them."""

from __future__ import annotations

import pytest

from control_plane.model import SafetyFilterConfig
from engine_workers.settings import EngineSettings
from frugal import wire
from safety_filter.settings import SafetyFilterSettings


def test_the_engine_and_the_safety_filter_default_to_different_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FRUGAL_ENGINE_PORT", raising=False)
    monkeypatch.delenv("FRUGAL_SAFETY_PORT", raising=False)
    engine, safety = EngineSettings().port, SafetyFilterSettings().port
    assert (engine, safety) == (wire.DEFAULT_ENGINE_PORT, wire.DEFAULT_SAFETY_FILTER_PORT)
    assert engine != safety
    assert SafetyFilterConfig().port == safety


def test_an_engines_default_ports_are_outside_the_safety_filters() -> None:
    """frugal.yaml's safety filter runs on port, port+1, ... (one per process)."""
    safety = SafetyFilterConfig()
    engine = wire.DEFAULT_ENGINE_PORT
    assert not {engine, wire.engine_metrics_port(engine)} & set(safety.ports())


def test_an_engines_metrics_port_is_its_port_plus_the_offset() -> None:
    assert wire.engine_metrics_port(7001) == 7001 + wire.ENGINE_METRICS_PORT_OFFSET
    assert wire.engine_metrics_port(wire.DEFAULT_ENGINE_PORT) != wire.DEFAULT_SAFETY_FILTER_PORT
