"""Large JSON job bodies are parsed in a child process, with the same result and errors as in the gateway."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from starlette.requests import Request

from fpf_client.errors import FpfError, InvalidArray, InvalidOptions, InvalidRequest
from service.gateway import body_parsing
from service.gateway.body_parsing import BodyParser
from service.gateway.submission import parse_json_body


def _parse(parser: BodyParser, body: bytes) -> object:
    """Parse ``body`` as it would arrive: in chunks of 64 KiB."""
    chunks = [body[start : start + 2**16] for start in range(0, len(body), 2**16)]

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    return asyncio.run(parser.parse(Request({"type": "http", "method": "POST", "headers": []}, receive)))


def test_a_body_over_the_threshold_is_parsed_by_a_child_like_in_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(body_parsing, "IN_PROCESS_MAX_BYTES", 2**16 + 1)  # spilled after two chunks
    monkeypatch.setattr(body_parsing, "parse_json_body", lambda body: pytest.fail("parsed in the gateway"))
    states = np.random.default_rng(0).normal(size=(7000, 5))
    body = json.dumps({"model_id": "m", "initial_states": states.tolist(), "options": {"tol_q": 1e-9}}).encode()
    parser = BodyParser()
    try:
        parsed = _parse(parser, body)
        expected = parse_json_body(body)
        assert parsed.model_id == expected.model_id and parsed.options == expected.options
        np.testing.assert_array_equal(parsed.initial_states, states)
        for bad, error, field in [
            (body.replace(b'"initial_states": [[', b'"initial_states": [["0.5", '), InvalidArray, "initial_states"),
            (body.replace(b'"tol_q": 1e-09', b'"tol_q": "1e-9"'), InvalidOptions, "options"),
            (b'{"model_id": "m", "initial_states": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", InvalidRequest, None),
        ]:
            with pytest.raises(FpfError) as raised:
                _parse(parser, bad)
            assert type(raised.value) is error and raised.value.extra.get("field") == field, raised.value
    finally:
        parser.close()
