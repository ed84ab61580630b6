"""Answers become records or the exception class of their problem code; events are decoded."""

from __future__ import annotations

import httpx
import pytest

from fpf_client import errors
from fpf_client.errors import ErrorCode, FpfError
from fpf_client.events import SSEDecoder
from fpf_client.progress import ProgressReporter
from fpf_client.protocol import event_record, get_job, raise_for_problem
from fpf_client.records import JobRecord

REQUEST = httpx.Request("GET", "http://fpf.test/v1/jobs/abc")


def answer(status: int, **kwargs) -> httpx.Response:
    return httpx.Response(status, request=REQUEST, **kwargs)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_problem_code_raises_its_own_class(code):
    problem = FpfError("boom", code=code).to_problem()
    with pytest.raises(errors.ERROR_CLASSES[code]) as caught:
        raise_for_problem(answer(code.http_status, json=problem))
    assert caught.value.code is code and caught.value.detail == "boom"


def test_problem_extensions_are_kept():
    problem = errors.PayloadTooLarge("too big", limit=1024).to_problem()
    with pytest.raises(errors.PayloadTooLarge) as caught:
        raise_for_problem(answer(413, json=problem))
    assert caught.value.extra == {"limit": 1024}


def test_an_answer_without_a_problem_document_still_gets_a_class():
    with pytest.raises(errors.ServiceUnavailable, match="HTTP 503"):
        raise_for_problem(answer(503, text="<html>bad gateway</html>"))
    with pytest.raises(errors.Unauthenticated):
        raise_for_problem(answer(401, json={"detail": "no"}))
    with pytest.raises(FpfError) as caught:
        raise_for_problem(answer(502, text="proxy error"))
    assert caught.value.code is ErrorCode.INTERNAL


def test_success_decodes_the_record():
    body = {
        "id": "abc",
        "model_id": "m",
        "status": "running",
        "n_initial_states": 8,
        "options": {},
        "progress": {"phase": "solve", "iteration": 3, "n_total": 8, "n_converged": 5},
        "future_field": 1,
    }
    record = get_job("abc").read(answer(200, json=body))
    assert record.status == "running" and record.progress.n_converged == 5 and not record.is_final


def test_sse_decoder_follows_the_event_stream_format():
    lines = [
        ": keep-alive",
        "event: progress",
        'data: {"id": "j", "status": "running"}',
        "",
        "data: a",
        "data:b",
        "id: 7",
        "",
        "event: end",
        "",
    ]
    decoder = SSEDecoder()
    events = [event for line in lines if (event := decoder.feed(line)) is not None]
    assert [(e.event, e.data, e.id) for e in events] == [
        ("progress", '{"id": "j", "status": "running"}', None),
        ("message", "a\nb", "7"),
        ("end", "", "7"),
    ]
    assert event_record(events[0]) == JobRecord(id="j", status="running")
    assert event_record(events[1]) is None and event_record(events[2]) is None


def test_progress_callback_sees_every_record():
    seen: list[str] = []
    with ProgressReporter(lambda record: seen.append(record.status), "job") as report:
        for status in ("queued", "running", "succeeded"):
            report(JobRecord(id="job", status=status))
    assert seen == ["queued", "running", "succeeded"]
