"""docs/api/openapi.yaml agrees with what decides the public API: the proto's request
fields, the safety filter's number ranges, and the safety filter's parser (generated valid
bodies pass it, generated invalid ones are refused by it)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from frugal.openai_request import NUMBER_RANGES
from frugal.v1 import inference_pb2 as pb
from safety_filter.errors import ApiError
from safety_filter.extproc.openai_request import SCHEMAS, parse_inference_request
from tests.helpers.openapi_document import (
    REQUEST_SCHEMAS,
    body_is_invalid,
    component,
    document,
    load,
)

# Proto fields a client never sets: the safety filter sets output_checks for the engine and
# drops a client's copy (safety_filter/extproc/processor.py), so the API does not offer it.
GATEWAY_ONLY_FIELDS = {"output_checks"}
MESSAGES = {
    "ChatCompletionRequest": pb.ChatCompletionRequest.DESCRIPTOR,
    "CompletionRequest": pb.CompletionRequest.DESCRIPTOR,
    "ChatMessage": pb.ChatMessage.DESCRIPTOR,
    "StreamOptions": pb.StreamOptions.DESCRIPTOR,
}
PROTO_INTEGERS = {
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
}
# Generated bodies per operation and mode; the parser is pure, so these are cheap.
EXAMPLES = 60


def _fields(descriptor: Any) -> set[str]:
    return {f.name for f in descriptor.fields} - GATEWAY_ONLY_FIELDS


def test_the_document_is_valid_openapi() -> None:
    load(document()).validate()


@pytest.mark.parametrize("name", MESSAGES)
def test_every_proto_request_field_is_in_the_document_and_no_other(name: str) -> None:
    assert set(component(name)["properties"]) == _fields(MESSAGES[name])


@pytest.mark.parametrize("name", MESSAGES)
def test_the_transcoder_takes_each_field_by_its_own_name_only(name: str) -> None:
    # Protobuf's JSON parser takes a field by its name and by its json_name (camelCase by
    # default), which the safety filter would not see: `"maxTokens"` once bypassed it.
    assert {f.name: f.json_name for f in MESSAGES[name].fields} == {
        f.name: f.name for f in MESSAGES[name].fields
    }


@pytest.mark.parametrize(("path", "name"), REQUEST_SCHEMAS.items())
def test_the_parser_reads_every_field_of_the_document(path: str, name: str) -> None:
    assert set(SCHEMAS[path].model_fields) == set(component(name)["properties"])


def _resolved(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return component(ref.rsplit("/", 1)[1]) if ref else schema


@pytest.mark.parametrize("name", REQUEST_SCHEMAS.values())
def test_every_number_range_is_the_parsers(name: str) -> None:
    properties = component(name)["properties"]
    for field, rule in NUMBER_RANGES.items():
        if field not in properties:
            continue
        schema = _resolved(properties[field])
        assert (schema["minimum"], schema["maximum"]) == (rule.low, rule.high) or (
            field == "n" and (schema["minimum"], schema["maximum"]) == (1, 1)
        ), field
        assert ("integer" in schema["type"]) == rule.integer, field


@pytest.mark.parametrize("name", ["ChatCompletionRequest", "CompletionRequest"])
def test_the_integer_ranges_fit_the_proto(name: str) -> None:
    for field in MESSAGES[name].fields:
        if field.type in PROTO_INTEGERS:
            low, high = PROTO_INTEGERS[field.type]
            rule = NUMBER_RANGES[field.name]
            assert rule.integer and low <= rule.low and rule.high <= high, field.name


def _verdict(path: str, body: Any) -> str | None:
    """None when the parser accepts `body`, else its refusal."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        parse_inference_request(path, raw)
    except ApiError as error:
        return error.message
    return None


@pytest.mark.parametrize("path", REQUEST_SCHEMAS)
def test_generated_valid_bodies_pass_the_parser(path: str) -> None:
    operation = load(document())[path]["POST"]

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def check(case: Any) -> None:
        assert _verdict(path, case.body) is None, case.body

    check()


@pytest.mark.parametrize("path", REQUEST_SCHEMAS)
def test_generated_invalid_bodies_are_refused_by_the_parser(path: str) -> None:
    operation = load(document())[path]["POST"]

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    def check(case: Any) -> None:
        if body_is_invalid(case):
            assert _verdict(path, case.body) is not None, case.body

    check()
