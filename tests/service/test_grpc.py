"""The gRPC API against a real server process beside the live REST gateway (same Redis prefix, same data dir).

Every RPC is called; records, errors and results are compared with what REST answers for the same job.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from service_harness import REPO, SLOW_OPTIONS, LiveService, free_port, random_states

from fpf_client import AsyncClient, Client, FixedPoints
from fpf_client.errors import (
    ErrorCode,
    FpfError,
    InvalidModel,
    JobNotFound,
    ModelNotFound,
    PayloadTooLarge,
    ShapeMismatch,
)
from fpf_client.options import FinderOptions
from fpf_client.records import MAX_RESULT_WAIT_S
from fpf_client.rpc import codec
from fpf_client.rpc.stubs import SERVICE_NAME, load
from service.core.store import RecordStore

pytestmark = pytest.mark.integration

pb2, pb2_grpc = load().pb2, load().pb2_grpc
OPTIONS = {"method": "auto", "dtype": "float64", "device": "cpu"}
DEFAULT_MESSAGE_LIMIT = 4 * 2**20


def _wait_serving(target: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Until the health service reports FixedPointService SERVING."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the gRPC server exited with {process.returncode}")
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"the gRPC server at {target} did not become SERVING within {timeout_s} s")


@pytest.fixture(scope="module")
def grpc_target(live_service: LiveService) -> Iterator[str]:
    """``host:port`` of an ``fpf-server grpc`` process sharing the live service's Redis prefix and data."""
    port = free_port()
    log = open(live_service.log_dir / "grpc.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.ops.cli", "--log-level", "warning", "grpc", "--port", str(port)],
        cwd=REPO,
        env=live_service.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_serving(f"127.0.0.1:{port}", process)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        log.close()


@pytest.fixture(scope="module")
def stub(grpc_target: str) -> Iterator[Any]:
    """A raw stub on a channel with gRPC's default limits (4 MiB per received message)."""
    with grpc.insecure_channel(grpc_target) as channel:
        yield pb2_grpc.FixedPointServiceStub(channel)


@pytest.fixture
def rest(live_service: LiveService) -> Iterator[Client]:
    with Client(live_service.url) as client:
        yield client


@pytest.fixture
def rpc(grpc_target: str) -> Iterator[Client]:
    with Client(f"grpc://{grpc_target}") as client:
        yield client


def rpc_failure(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, dict[str, Any]]:
    """(status code, ErrorInfo.reason, problem document) of a call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        result = call()
        for _ in result if hasattr(result, "__iter__") and not hasattr(result, "ByteSize") else ():
            pass
    status = rpc_status.from_call(caught.value)
    assert status is not None, f"no google.rpc.Status in {caught.value}"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.domain == "fpf.dev"
    return caught.value.code(), info.reason, codec.json.loads(info.metadata["problem"])


def same_arrays_bit_for_bit(a: FixedPoints, b: FixedPoints, *, meta: bool = True) -> bool:
    """Every array (with ``meta``, also the JSON text of the metadata) of the same dtype, shape and bytes."""
    left, right = (a.to_npz_arrays(), b.to_npz_arrays()) if meta else (a.arrays(), b.arrays())
    return left.keys() == right.keys() and all(
        left[k].dtype == right[k].dtype and left[k].shape == right[k].shape and left[k].tobytes() == right[k].tobytes()
        for k in left
    )


# --- the server ----------------------------------------------------------------------------
def test_health_and_reflection_are_served(grpc_target: str) -> None:
    with grpc.insecure_channel(grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            assert (
                health.Check(health_pb2.HealthCheckRequest(service=service)).status
                == health_pb2.HealthCheckResponse.SERVING
            )
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(
            reflection.ServerReflectionInfo(
                iter(
                    [
                        reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
                    ]
                )
            )
        )
    services = {s.name for s in answers[0].list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services
    assert answers[1].file_descriptor_response.file_descriptor_proto  # the .proto, for grpcurl and friends


# --- models ----------------------------------------------------------------------------------
class BigTanh(torch.nn.Module):
    """An 8-unit tanh RNN carrying a 6 MB unused buffer, so its file exceeds gRPC's 4 MiB message limit."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(5)
        self.W = torch.nn.Parameter(torch.randn(8, 8, generator=generator) / 8**0.5)
        self.B = torch.nn.Parameter(torch.randn(8, 2, generator=generator))
        self.register_buffer("ballast", torch.randn(1_500_000, generator=generator))

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h @ self.W.T + u @ self.B.T)


def test_a_model_above_the_message_limit_uploads_in_chunks_and_reads_the_same_over_rest(
    rpc: Client, rest: Client, tmp_path: Path
) -> None:
    path = tmp_path / "big_tanh.pt"
    torch.jit.save(torch.jit.script(BigTanh()), str(path))
    assert path.stat().st_size > DEFAULT_MESSAGE_LIMIT
    model = rpc.upload_model(path, n_states=8, n_inputs=2, timeout=60)
    assert model.status == "ready" and (model.n_states, model.n_inputs) == (8, 2)
    assert model.id == hashlib.sha256(path.read_bytes()).hexdigest() and model.size_bytes == path.stat().st_size
    assert rpc.get_model(model.id) == rest.get_model(model.id) == model
    assert model in rpc.list_models() and rpc.list_models() == rest.list_models()

    rpc.delete_model(model.id)
    for client in (rpc, rest):
        with pytest.raises(ModelNotFound):
            client.get_model(model.id)


def test_an_unusable_model_is_invalid_with_the_same_reason_over_both(rpc: Client, rest: Client, tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a TorchScript archive " + uuid.uuid4().bytes)
    with pytest.raises(InvalidModel) as over_grpc:
        rpc.upload_model(path, timeout=60)
    with pytest.raises(InvalidModel) as over_rest:
        rest.upload_model(path, timeout=60)
    assert over_grpc.value.detail == over_rest.value.detail and over_grpc.value.extra == over_rest.value.extra


# --- jobs --------------------------------------------------------------------------------------
def test_jobs_cross_transports_and_results_are_bit_identical(
    rpc: Client, rest: Client, tanh_model: dict[str, Any]
) -> None:
    states = np.asarray(random_states(96, seed=7))
    inputs = np.array([[0.25, -0.5]])
    over_grpc = rpc.submit(tanh_model["id"], states, inputs, **OPTIONS)
    over_rest = rest.submit(tanh_model["id"], states.astype(np.float32), inputs, **OPTIONS)
    for job in (over_grpc, over_rest):
        job.wait(progress=False, timeout=120)
        assert rpc.get_job(job.id).record == rest.get_job(job.id).record
        assert rpc.get_job(job.id).record.status == "succeeded"
    ids = {r.id for r in rpc.list_jobs("succeeded")}
    assert {over_grpc.id, over_rest.id} <= ids and rpc.list_jobs() == rest.list_jobs()

    for job_id in (over_grpc.id, over_rest.id):
        streamed = rpc.get_job(job_id).result()
        as_npz = rest.get_job(job_id).result()
        as_json = FixedPoints.from_json_dict(rest._http.get(f"/v1/jobs/{job_id}/result").json())
        assert streamed == as_npz == as_json and streamed.n >= 1
        assert same_arrays_bit_for_bit(streamed, as_npz) and same_arrays_bit_for_bit(streamed, as_json, meta=False)
    assert rpc.get_job(over_rest.id).result().xstar.dtype == np.float64  # dtype=float64 option, whatever was sent


def test_grouped_and_flat_options_are_one_contract_over_both_transports(
    stub: Any, rest: Client, tanh_model: dict[str, Any]
) -> None:
    """The same search sent with the adam group or with its deprecated flat names, as REST JSON and as
    gRPC options_json: every job records the grouped options and finds the same points."""
    common = {"method": "adam", "max_iters": 400, "dtype": "float64", "device": "cpu"}
    grouped = {**common, "adam": {"lr_init": 0.05, "hps": {"epsilon": 0.01}}}
    flat = {**common, "lr_init": 0.05, "adam_hps": {"epsilon": 0.01}}
    states = random_states(32, seed=11)
    job_ids = []
    for options in (grouped, flat):
        body = {"model_id": tanh_model["id"], "initial_states": states, "options": options}
        response = rest._http.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        job_ids.append(response.json()["id"])
        request = pb2.SubmitJobRequest(
            model_id=tanh_model["id"], initial_states=_array(states), options_json=json.dumps(options)
        )
        job_ids.append(stub.SubmitJob(request).id)
    recorded = FinderOptions.model_validate(grouped).model_dump(mode="json")
    results = []
    for job_id in job_ids:
        job = rest.get_job(job_id)
        job.wait(progress=False, timeout=120)
        assert job.record.status == "succeeded"
        assert job.record.options == recorded and recorded["adam"]["hps"]["epsilon"] == 0.01
        results.append(job.result())
    for other in results[1:]:
        np.testing.assert_allclose(other.xstar, results[0].xstar, rtol=1e-12, atol=1e-12)
        assert other.info["iterations"] == results[0].info["iterations"]


def test_watch_job_streams_progress_until_the_end_and_cancel_stops_it(
    rpc: Client, rest: Client, tanh_model: dict[str, Any]
) -> None:
    job = rpc.submit(tanh_model["id"], random_states(1024), **SLOW_OPTIONS)
    seen: list[Any] = []
    deadline = time.monotonic() + 60
    for record in rpc._transport.job_events(job.id, deadline):
        seen.append(record)
        if record.progress is not None and record.progress.iteration > 0:
            break
    assert seen and seen[-1].status == "running" and seen[-1].progress.n_total == 1024
    assert rpc.list_jobs("running")[0].id == job.id

    assert job.cancel().cancel_requested
    final = job.wait(progress=seen.append, timeout=60)  # fed by WatchJob until the final record
    assert final.status == "cancelled" and seen[-1] == final == rest.get_job(job.id).record
    with pytest.raises(FpfError) as caught:
        job.result()
    assert caught.value.code is ErrorCode.JOB_CANCELLED

    job.delete()
    for client in (rpc, rest):
        with pytest.raises(JobNotFound):
            client.get_job(job.id)


def test_a_result_request_waits_for_its_job_to_end_over_both_transports(
    stub: Any, rpc: Client, rest: Client, live_service: LiveService, tanh_model: dict[str, Any]
) -> None:
    """REST's ``?wait=`` and gRPC's ``wait_s``: a job still running at the end of the wait answers
    job_not_finished, a job that ends during it answers at once with its outcome, a wait out of
    range is refused, and the client fetches a queued job's result that way."""
    slow = rest.submit(tanh_model["id"], random_states(1024), **SLOW_OPTIONS)
    result_path = f"/v1/jobs/{slow.id}/result"
    try:
        started = time.monotonic()
        answer = rest._http.get(result_path, params={"wait": 1})
        assert answer.status_code == 409 and answer.json()["code"] == "job_not_finished", answer.text
        assert time.monotonic() - started >= 1
        started = time.monotonic()
        failure = rpc_failure(lambda: stub.GetResult(pb2.GetResultRequest(job_id=slow.id, wait_s=1)))
        assert failure[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "job_not_finished")
        assert time.monotonic() - started >= 1
        for wait in (-1, MAX_RESULT_WAIT_S + 1):
            refused = rest._http.get(result_path, params={"wait": wait})
            assert refused.status_code == 400 and refused.json()["code"] == "invalid_request", refused.text
            failure = rpc_failure(partial(stub.GetResult, pb2.GetResultRequest(job_id=slow.id, wait_s=wait)))
            assert failure[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request")

        # Both requests are waiting on the job's notices (subscribed) before the cancel.
        notices = RecordStore.from_url(live_service.redis_url, live_service.prefix, result_ttl_s=60)
        channel = notices.keys.events(slow.id)
        with ThreadPoolExecutor(2) as pool:
            over_rest = pool.submit(rest._http.get, result_path, params={"wait": MAX_RESULT_WAIT_S}, timeout=120)
            over_grpc = pool.submit(
                rpc_failure, lambda: stub.GetResult(pb2.GetResultRequest(job_id=slow.id, wait_s=MAX_RESULT_WAIT_S))
            )
            while notices.redis.pubsub_numsub(channel)[0][1] < 2:
                assert not over_rest.done() and not over_grpc.done()
                time.sleep(0.05)
            started = time.monotonic()
            slow.cancel()
            answer, failure = over_rest.result(), over_grpc.result()
        notices.redis.close()
        assert time.monotonic() - started < MAX_RESULT_WAIT_S / 2
        assert answer.status_code == 409 and answer.json()["code"] == "job_cancelled", answer.text
        assert failure[1] == "job_cancelled"
    finally:
        slow.cancel()

    quick = rpc.submit(tanh_model["id"], random_states(16), **OPTIONS)
    assert not quick.record.is_final
    assert same_arrays_bit_for_bit(quick.result(timeout=120), rest.get_job(quick.id).result())


def test_a_100_mb_result_streams_in_messages_within_the_default_limit(
    stub: Any, rpc: Client, rest: Client, live_service: LiveService
) -> None:
    from service.core.artifacts import ArtifactStore
    from service.core.records import Job, JobStatus

    k, d = 400, 256  # J_xstar alone: 400 * 256 * 256 float32 = 105 MB
    rng = np.random.default_rng(0)
    expected = FixedPoints(
        xstar=rng.standard_normal((k, d)).astype(np.float32),
        qstar=rng.random(k) * 1e-12,
        J_xstar=rng.standard_normal((k, d, d), dtype=np.float32),
        info={"n_samples": k},
    )
    job = Job(
        id=uuid.uuid4().hex,
        model_id="written-by-the-test",
        status=JobStatus.SUCCEEDED,
        n_initial_states=k,
        options={},
        created_at=time.time(),
        finished_at=time.time(),
    )
    artifacts = ArtifactStore(live_service.data_dir)
    with artifacts.atomic_write(artifacts.result_path(job.id)) as out:
        expected.save(out)
    store = RecordStore.from_url(live_service.redis_url, live_service.prefix, result_ttl_s=3600)
    store.create_job(job)

    sizes = [chunk.ByteSize() for chunk in stub.GetResult(pb2.GetResultRequest(job_id=job.id))]
    assert max(sizes) <= DEFAULT_MESSAGE_LIMIT and sum(sizes) > 100 * 10**6
    fetched = rpc.get_job(job.id).result()
    assert fetched == expected and same_arrays_bit_for_bit(fetched, rest.get_job(job.id).result())
    stub.DeleteJob(pb2.DeleteJobRequest(job_id=job.id))
    assert not artifacts.job_dir(job.id).exists()


# --- errors: the documented codes, the same as REST's ----------------------------------------------
def _array(values: Any, dtype: str = "<f8") -> Any:
    return codec.array_message(np.asarray(values, dtype=np.dtype(dtype)))


@pytest.mark.parametrize(
    "change, status, reason",
    [
        ({"initial_states": _array(np.zeros((4, 5)))}, grpc.StatusCode.INVALID_ARGUMENT, "shape_mismatch"),
        ({"inputs": _array(np.zeros((3, 2)))}, grpc.StatusCode.INVALID_ARGUMENT, "shape_mismatch"),
        ({"initial_states": _array([[np.nan] * 8])}, grpc.StatusCode.INVALID_ARGUMENT, "non_finite"),
        (
            {"initial_states": pb2.Array(dtype="<U3", shape=[1, 8], data=b"\0" * 96)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_array",
        ),
        (
            {"initial_states": pb2.Array(dtype="<f8", shape=[1, 8], data=b"\0" * 10)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_array",
        ),
        (
            {"initial_states": pb2.Array(dtype="|O", shape=[1], data=b"\0" * 8)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_array",
        ),
        (
            {"initial_states": pb2.Array(dtype="<f8", shape=[10**5, 10**4])},
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "payload_too_large",
        ),
        ({"options_json": '{"method": "bisection"}'}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_options"),
        ({"options_json": "{not json"}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_options"),
        ({"options_json": '{"lm": {"warm_start": 3}}'}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_options"),
        (
            {"options_json": '{"lr_init": 0.1, "adam": {"lr_init": 0.2}}'},
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_options",
        ),
        ({"model_id": "0" * 64}, grpc.StatusCode.NOT_FOUND, "model_not_found"),
        ({"model_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
    ],
)
def test_bad_submissions_get_their_documented_status_and_reason(
    stub: Any, tanh_model: dict[str, Any], change: dict[str, Any], status: grpc.StatusCode, reason: str
) -> None:
    request = {"model_id": tanh_model["id"], "initial_states": _array(random_states(4)), **change}
    code, got_reason, problem = rpc_failure(lambda: stub.SubmitJob(pb2.SubmitJobRequest(**request)))
    assert (code, got_reason) == (status, reason)
    assert problem["code"] == reason and problem["status"] == ErrorCode(reason).http_status and problem["detail"]


def test_lookups_states_and_conflicts_get_their_documented_status(
    stub: Any, rpc: Client, tanh_model: dict[str, Any]
) -> None:
    missing = "f" * 32
    expectations = [
        (lambda: stub.GetJob(pb2.GetJobRequest(job_id=missing)), grpc.StatusCode.NOT_FOUND, "job_not_found"),
        (lambda: stub.CancelJob(pb2.CancelJobRequest(job_id=missing)), grpc.StatusCode.NOT_FOUND, "job_not_found"),
        (lambda: stub.DeleteJob(pb2.DeleteJobRequest(job_id=missing)), grpc.StatusCode.NOT_FOUND, "job_not_found"),
        (lambda: stub.WatchJob(pb2.WatchJobRequest(job_id=missing)), grpc.StatusCode.NOT_FOUND, "job_not_found"),
        (lambda: stub.GetResult(pb2.GetResultRequest(job_id=missing)), grpc.StatusCode.NOT_FOUND, "job_not_found"),
        (lambda: stub.GetModel(pb2.GetModelRequest(model_id=missing)), grpc.StatusCode.NOT_FOUND, "model_not_found"),
        (
            lambda: stub.DeleteModel(pb2.DeleteModelRequest(model_id=missing)),
            grpc.StatusCode.NOT_FOUND,
            "model_not_found",
        ),
        (lambda: stub.ListJobs(pb2.ListJobsRequest(limit=5000)), grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
        (
            lambda: stub.UploadModel(iter([pb2.UploadModelRequest(chunk=b"no header first")])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_request",
        ),
        (
            lambda: stub.UploadModel(iter([pb2.UploadModelRequest(header=pb2.ModelUploadHeader(n_states=0))])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_request",
        ),
        # Past FPF_MAX_BODY_BYTES (8 MiB in these tests), in chunks that each fit a message.
        (
            lambda: stub.UploadModel(
                iter(
                    [pb2.UploadModelRequest(header=pb2.ModelUploadHeader(filename="big.pt"))]
                    + [pb2.UploadModelRequest(chunk=bytes(2**20))] * 9
                )
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "payload_too_large",
        ),
    ]
    for call, status, reason in expectations:
        assert rpc_failure(call)[:2] == (status, reason)

    slow = rpc.submit(tanh_model["id"], random_states(1024), **SLOW_OPTIONS)
    try:
        assert rpc_failure(lambda: stub.GetResult(pb2.GetResultRequest(job_id=slow.id)))[:2] == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "job_not_finished",
        )
    finally:
        slow.cancel()
    first = pb2.SubmitJobRequest(
        model_id=tanh_model["id"],
        initial_states=_array(random_states(4)),
        idempotency_key=uuid.uuid4().hex,
        options_json='{"method": "auto"}',
    )
    again = stub.SubmitJob(first)
    assert stub.SubmitJob(first).id == again.id  # a replay answers with the same job
    first.options_json = '{"method": "adam"}'
    assert rpc_failure(lambda: stub.SubmitJob(first))[:2] == (grpc.StatusCode.ALREADY_EXISTS, "idempotency_conflict")


def test_the_client_raises_the_same_exceptions_over_both_transports(
    rpc: Client, rest: Client, tanh_model: dict[str, Any]
) -> None:
    for client in (rpc, rest):
        with pytest.raises(ShapeMismatch) as caught:
            client.submit(tanh_model["id"], np.zeros((3, 5)))
        assert caught.value.extra == {"field": "initial_states"}
        with pytest.raises(JobNotFound):
            client.get_job("nope")
    # One message above the server's 8 MiB limit is refused by gRPC itself, before fpf sees it.
    with pytest.raises(PayloadTooLarge):
        rpc.submit(tanh_model["id"], np.zeros((140_000, 8)))


def test_an_unreachable_server_is_service_unavailable() -> None:
    with Client(f"grpc://127.0.0.1:{free_port()}", timeout=2) as client, pytest.raises(FpfError) as caught:
        client.list_jobs()
    assert caught.value.code is ErrorCode.SERVICE_UNAVAILABLE


def test_an_unreachable_server_is_service_unavailable_to_the_async_client() -> None:
    client = AsyncClient(f"grpc://127.0.0.1:{free_port()}", timeout=2)  # made before any event loop runs

    async def list_jobs() -> None:
        async with client:
            await client.list_jobs()

    with pytest.raises(FpfError) as caught:
        asyncio.run(list_jobs())
    assert caught.value.code is ErrorCode.SERVICE_UNAVAILABLE


def test_compat_finder_over_grpc_and_rest_gives_the_same_labelled_points(
    live_service: LiveService, grpc_target: str
) -> None:
    """fpf_client.compat with user cond_ids: REST and gRPC return the same points with the same labels."""
    from fpf_client.compat import FixedPointFinder

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rnn = torch.nn.RNN(2, 8, batch_first=True)
    states = np.random.default_rng(3).normal(size=(32, 8)) * 0.5
    inputs = np.repeat([[0.0, 0.0], [0.5, -0.5]], 16, axis=0)
    labels = np.arange(32) % 4 + 100
    results = [
        FixedPointFinder(rnn, url=url, verbose=False).find_fixed_points(states, inputs, cond_ids=labels)
        for url in (live_service.url, f"grpc://{grpc_target}")
    ]
    (unique_rest, all_rest), (unique_rpc, all_rpc) = results
    assert all_rest.cond_id.tolist() == all_rpc.cond_id.tolist() == labels.tolist()
    assert same_arrays_bit_for_bit(unique_rest, unique_rpc, meta=False)
    assert set(unique_rest.cond_id.tolist()) <= set(labels.tolist())
