"""Reading `frugal.yaml` into the desired-state model (I/O edge of model.py)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from control_plane.model import FrugalConfig


class ConfigError(Exception):
    """The configuration file cannot be used; the message names the file and the field."""


def load_config(path: Path) -> FrugalConfig:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return FrugalConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"{where}: {error['msg']}")
    return "; ".join(lines)
