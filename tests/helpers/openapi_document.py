"""The public API's OpenAPI document (docs/api/openapi.yaml) as schemathesis reads it.

Layer: test support (pure). The document describes any deployment; a test narrows
`model` to the models its stack serves, so generated valid requests are answerable.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import schemathesis
import yaml
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.schemas import OpenApiSchema

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "api" / "openapi.yaml"
REQUEST_SCHEMAS = {
    "/v1/chat/completions": "ChatCompletionRequest",
    "/v1/completions": "CompletionRequest",
}


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return loaded


def component(name: str, source: dict[str, Any] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = (source or document())["components"]["schemas"][name]
    return found


def for_models(models: list[str]) -> dict[str, Any]:
    """The document with `model` narrowed to `models` (an unknown model is a 404)."""
    narrowed = copy.deepcopy(document())
    for name in REQUEST_SCHEMAS.values():
        component(name, narrowed)["properties"]["model"] = {"enum": models}
    (parameter,) = narrowed["paths"]["/v1/models/{model}"]["get"]["parameters"]
    parameter["schema"] = {"enum": models}
    return narrowed


def load(source: dict[str, Any]) -> OpenApiSchema:
    schema = schemathesis.openapi.from_dict(source)
    assert isinstance(schema, OpenApiSchema)
    return schema


def body_is_invalid(case: schemathesis.Case[Any]) -> bool:
    """Whether a negative case broke its body (it may break only a header instead)."""
    body = case.meta.components.get(ParameterLocation.BODY) if case.meta else None
    return body is not None and body.mode == GenerationMode.NEGATIVE
