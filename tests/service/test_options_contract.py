"""Job options are one contract over REST and gRPC: the OpenAPI document describes FinderOptions with
its per-method groups and the deprecated flat names, and gRPC carries the same object as JSON text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fpf_client.options import DEPRECATED_OPTIONS, FinderOptions
from fpf_client.rpc.stubs import load
from service.core.settings import Settings
from service.gateway.app import create_app

GROUPS = ("adam", "lm", "lm_krylov", "newton_krylov", "anderson")


@pytest.fixture(scope="module")
def options_schema() -> dict[str, Any]:
    """The schema of ``options`` in the JSON body of ``POST /v1/jobs``, from the app's OpenAPI document."""
    openapi = create_app(Settings(redis_url="redis://127.0.0.1:1/0")).openapi()
    body = openapi["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema: dict[str, Any] = body["properties"]["options"]
    return schema


def test_the_openapi_options_are_finder_options_with_their_groups(options_schema: dict[str, Any]) -> None:
    properties = options_schema["properties"]
    assert options_schema["additionalProperties"] is False and "$ref" not in json.dumps(options_schema)
    assert set(FinderOptions.model_fields) <= set(properties)
    for group in GROUPS:
        fields = getattr(FinderOptions(), group).model_dump()
        assert properties[group]["additionalProperties"] is False and set(properties[group]["properties"]) == set(
            fields
        )
    assert properties["lm_krylov"]["properties"]["cg_iters"] == {
        "default": 30,
        "description": properties["lm_krylov"]["properties"]["cg_iters"]["description"],
        "minimum": 1,
        "title": "Cg Iters",
        "type": "integer",
    }


def test_the_openapi_marks_the_flat_names_deprecated_with_their_groups_types(options_schema: dict[str, Any]) -> None:
    properties = options_schema["properties"]
    for flat, (group, field) in DEPRECATED_OPTIONS.items():
        assert properties[flat]["deprecated"] is True and f"{group}.{field}" in properties[flat]["description"]
        assert _typed(properties[flat]) == _typed(properties[group]["properties"][field]), flat
    assert not any(properties[name].get("deprecated") for name in FinderOptions.model_fields)


def _typed(schema: dict[str, Any]) -> dict[str, Any]:
    """What a schema says of a value's type and bounds, without its annotations."""
    return {k: v for k, v in schema.items() if k not in ("default", "title", "description", "deprecated")}


def test_grpc_carries_the_same_options_object_as_json_text() -> None:
    pb2 = load().pb2
    for message in (pb2.SubmitJobRequest, pb2.Job):
        field = message.DESCRIPTOR.fields_by_name["options_json"]
        assert field.type == field.TYPE_STRING
    grouped = {"method": "lm", "lm": {"warm_start_iters": 3}, "adam": {"lr_init": 0.5}}
    request = pb2.SubmitJobRequest(options_json=json.dumps(grouped))
    assert FinderOptions.model_validate_json(request.options_json, strict=True) == FinderOptions(**grouped)
