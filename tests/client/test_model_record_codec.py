"""A model record with upload naming and the ONNX validation travels over gRPC unchanged, and the upload
header is checked by the same rules as REST's form fields."""

from __future__ import annotations

import time

import pytest

from fpf_client.records import Model as ClientModel
from fpf_client.rpc import codec
from fpf_client.rpc.stubs import load
from service.core.records import Model, ModelStatus
from service.gateway.schemas import ModelOut, UploadHints


def _record(**fields: object) -> Model:
    return Model(
        id="ab" * 32,
        status=ModelStatus.READY,
        size_bytes=10,
        created_at=time.time(),
        format="onnx",
        n_states=6,
        n_inputs=3,
        **fields,
    )


def test_naming_and_validation_round_trip() -> None:
    record = _record(
        input_name="a",
        state_name="b",
        output_name="y",
        validation={"max_abs_diff": 2.4e-7, "tolerance": 1.9e-4, "n_samples": 16, "reference": "onnxruntime 1.32"},
    )
    rest = ModelOut.of(record).model_dump(mode="json")
    over_grpc = codec.model_fields(codec.model_message(ModelOut.of(record).model_dump()))
    assert ClientModel.model_validate(over_grpc) == ClientModel.model_validate(rest)
    assert over_grpc["validation"]["max_abs_diff"] == 2.4e-7 and over_grpc["signature"] is None


def test_record_without_naming_round_trips_as_none() -> None:
    over_grpc = codec.model_fields(codec.model_message(ModelOut.of(_record()).model_dump()))
    assert [over_grpc[k] for k in ("signature", "input_name", "state_name", "output_name", "validation")] == [None] * 5


def test_model_record_fields_survive_redis_encoding() -> None:
    record = _record(signature="step", validation={"max_abs_diff": 1e-7, "tolerance": 1e-4})
    assert Model.from_fields(record.to_fields()) == record


def test_upload_header_fields_match_the_rest_form() -> None:
    header = load().pb2.ModelUploadHeader
    assert set(UploadHints.model_fields) <= {field.name for field in header.DESCRIPTOR.fields}
    hints = UploadHints.model_validate({"format": "savedmodel", "signature": "step", "input_name": "a"})
    assert hints.record_fields()["format"] == "savedmodel" and hints.record_fields()["state_name"] is None
    for bad in ({"format": "keras"}, {"input_name": ""}, {"state_name": "x" * 257}, {"n_states": 0}):
        with pytest.raises(ValueError):
            UploadHints.model_validate(bad)
