"""Client and AsyncClient against the live service: a real gateway, Redis and worker process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from service_harness import SLOW_OPTIONS

from fpf_client import AsyncClient, Client, FixedPoints, JobRecord, Model
from fpf_client.aio import AsyncJob
from fpf_client.errors import (
    ErrorCode,
    FpfError,
    IdempotencyConflict,
    InvalidModel,
    InvalidOptions,
    JobCancelled,
    JobNotFound,
    ModelNotFound,
    ShapeMismatch,
)

pytestmark = pytest.mark.integration

N_STATES, N_INPUTS = 8, 2
#: Compared runs use float64 so that the service and the in-process engine agree to round-off.
OPTIONS = {"method": "auto", "dtype": "float64", "device": "cpu"}


class TanhStep(torch.nn.Module):
    """h_next = tanh(W h + B u + b) with a gain that gives several fixed points."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(1.6 * torch.randn(N_STATES, N_STATES, generator=generator) / N_STATES**0.5)
        self.B = torch.nn.Parameter(torch.randn(N_STATES, N_INPUTS, generator=generator))
        self.b = torch.nn.Parameter(torch.zeros(N_STATES))

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h @ self.W.T + u @ self.B.T + self.b)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tanh8.pt"
    torch.jit.save(torch.jit.script(TanhStep()), str(path))
    return path


@pytest.fixture(scope="module")
def states() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=(128, N_STATES))


@pytest.fixture
def client(live_service):
    with Client(live_service.url, timeout=30) as client:
        yield client


def sorted_rows(fps: FixedPoints) -> np.ndarray:
    return np.argsort(fps.xstar[:, 0], kind="stable")


def assert_same_fixed_points(got: FixedPoints, expected: FixedPoints) -> None:
    """Same points and analysis up to order and round-off."""
    assert len(got) == len(expected) > 0
    g, e = sorted_rows(got), sorted_rows(expected)
    np.testing.assert_allclose(got.xstar[g], expected.xstar[e], atol=1e-9)
    np.testing.assert_allclose(got.J_xstar[g], expected.J_xstar[e], atol=1e-8)
    np.testing.assert_array_equal(got.is_stable[g], expected.is_stable[e])
    np.testing.assert_array_equal(got.n_unstable[g], expected.n_unstable[e])


def test_upload_is_validated_and_addressed_by_content(client, model_path):
    model = client.upload_model(model_path)
    assert model.status == "ready" and (model.n_states, model.n_inputs) == (N_STATES, N_INPUTS)
    assert model.filename == "tanh8.pt" and model.size_bytes == model_path.stat().st_size
    assert client.upload_model(model_path).id == model.id  # the same bytes are the same model
    assert client.get_model(model.id) == client.get_model(model)
    assert model.id in {m.id for m in client.list_models()}


def test_an_unusable_model_raises_invalid_model_with_the_reason(client, tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a TorchScript archive")
    with pytest.raises(InvalidModel) as caught:
        client.upload_model(path)
    assert "garbage.pt" in caught.value.detail and len(caught.value.detail) > len("garbage.pt is invalid: ")


def test_submit_wait_with_progress_and_the_result_equals_the_engine(live_service, client, model_path, states):
    from workers.engine import find_fixed_points

    # A blocker holds the worker until the wait opens the event stream: the job cannot end before.
    with Client(live_service.url, timeout=30) as other:
        blocker = other.submit(model_path, states[:4], **SLOW_OPTIONS)
        while blocker.refresh().status != "running":
            assert blocker.record.status == "queued", blocker.record
            time.sleep(0.05)
        inputs = np.array([[0.3, -0.2]])
        job = client.submit(model_path, states, inputs, **OPTIONS)
        requested: list[str] = []

        def record(request: httpx.Request) -> None:
            requested.append(request.url.path)
            if request.url.path.endswith("/events") and not blocker.record.cancel_requested:
                blocker.cancel()

        client._http.event_hooks["request"].append(record)
        seen: list[JobRecord] = []
        final = job.wait(progress=seen.append, timeout=120)
        assert blocker.wait(progress=False, timeout=60).status == "cancelled"
    assert final.status == "succeeded" and job.status == "succeeded"
    assert seen[-1] == final and any(r.progress is not None and r.progress.n_total == len(states) for r in seen)
    # Fed by the event stream, not by polling: one look before it and one after its end.
    assert requested.count(f"/v1/jobs/{job.id}/events") == 1
    assert requested.count(f"/v1/jobs/{job.id}") <= 3

    fps = job.result()
    expected = find_fixed_points(TanhStep(), states, inputs, **OPTIONS)
    assert_same_fixed_points(fps, expected)
    assert fps.info["n_samples"] == len(states)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_the_result_of_a_job_not_yet_ended_is_one_request_that_waits_for_it(
    live_service, client, model_path, states, flavour
):
    # A blocker holds the worker until the result is asked for: the job cannot end before.
    with Client(live_service.url, timeout=30) as other:
        blocker = other.submit(model_path, states[:4], **SLOW_OPTIONS)
        while blocker.refresh().status != "running":
            assert blocker.record.status == "queued", blocker.record
            time.sleep(0.05)
        job = client.submit(model_path, states, **OPTIONS)
        requested: list[str] = []

        def record(request: httpx.Request) -> None:
            requested.append(request.url.path)
            if request.url.path.endswith("/result") and not blocker.record.cancel_requested:
                blocker.cancel()

        async def in_asyncio() -> FixedPoints:
            async with AsyncClient(live_service.url) as async_client:
                async_client._transport.http.event_hooks["request"].append(_async(record))
                return await AsyncJob(async_client, job.record).result(timeout=120)

        client._http.event_hooks["request"].append(record)
        assert not job.record.is_final
        fps = job.result(timeout=120) if flavour == "sync" else asyncio.run(in_asyncio())
        assert blocker.wait(progress=False, timeout=60).status == "cancelled"
    assert requested == [f"/v1/jobs/{job.id}/result"]  # no look at the job, no event stream
    assert same_bits(fps, client.get_job(job.id).result())
    assert fps.info["n_samples"] == len(states)


def _async(hook: Callable[[httpx.Request], None]) -> Callable[[httpx.Request], Any]:
    """``hook`` as an httpx.AsyncClient event hook."""

    async def call(request: httpx.Request) -> None:
        hook(request)

    return call


def test_roots_float32_cannot_certify_come_back_refined_in_float64(client, model_path, states):
    """tol_q below float32's resolution: samples stall on roots, and the job certifies those roots in
    float64: the same points as a float64 search, and no warning."""
    from workers.engine import find_fixed_points

    options = {"method": "auto", "device": "cpu", "tol_q": 1e-20}
    fps = client.find_fixed_points(model_path, states[:32], progress=False, timeout=120, dtype="float32", **options)
    assert fps.info["n_stalled_at_rounding_floor"] > 0 and fps.info["n_refined_in_float64"] > 0
    assert fps.info["warnings"] == [] and fps.n > 0 and (fps.qstar < 1e-20).all()
    expected = find_fixed_points(TanhStep(), states[:32], dtype="float64", **options)
    assert all(x in expected for x in fps.xstar)


def test_a_result_explains_samples_that_stalled_for_want_of_precision(client, model_path, states):
    """tol_q below what even float64 resolves: the samples stall on roots, and the result says why."""
    fps = client.find_fixed_points(
        model_path,
        states[:32],
        progress=False,
        timeout=120,
        method="auto",
        dtype="float32",
        device="cpu",
        tol_q=1e-40,
    )
    assert fps.n == 0 and fps.info["n_converged"] == 0
    assert fps.info["n_stalled_at_rounding_floor"] > 0
    assert any("did not converge in float64 either" in warning for warning in fps.info["warnings"])
    assert "warning:" in fps.summary()


def test_find_fixed_points_uploads_a_module_and_shows_a_bar(client, states, model_path):
    fps = client.find_fixed_points(TanhStep(), states, progress=True, timeout=120, **OPTIONS)
    assert_same_fixed_points(fps, client.find_fixed_points(model_path, states, progress=False, **OPTIONS))


def test_cancel_stops_a_running_job(client, model_path):
    endless = {"method": "adam", "max_iters": 1_000_000, "tol_q": 1e-300, "tol_dq": 0.0}
    big = np.random.default_rng(1).uniform(-1, 1, size=(4096, N_STATES))
    job = client.submit(model_path, big, **endless)
    deadline = time.monotonic() + 60
    while job.status != "running":
        assert time.monotonic() < deadline, f"job still {job.record.status}"
        time.sleep(0.1)
    job.cancel()
    assert job.wait(progress=False, timeout=30).status == "cancelled"
    with pytest.raises(JobCancelled):
        job.result()
    job.delete()
    with pytest.raises(JobNotFound):
        job.refresh()


def test_idempotency_key_returns_the_same_job_or_a_conflict(client, model_path, states):
    first = client.submit(model_path, states, idempotency_key="client-test-key", **OPTIONS)
    again = client.submit(model_path, states, idempotency_key="client-test-key", **OPTIONS)
    assert again.id == first.id
    with pytest.raises(IdempotencyConflict):
        client.submit(model_path, states[:5], idempotency_key="client-test-key", **OPTIONS)


def test_service_errors_arrive_as_their_exception_class(client, model_path, states):
    model = client.upload_model(model_path)
    with pytest.raises(ShapeMismatch):
        client.submit(model, np.zeros((3, N_STATES + 1)))
    with pytest.raises(ModelNotFound):
        client.submit("0" * 64, states)
    with pytest.raises(JobNotFound):
        client.get_job("no-such-job")
    with pytest.raises(ModelNotFound):
        client.get_model("0" * 64)
    with pytest.raises(InvalidOptions):  # caught locally, before the network
        client.submit(model, states, methd="adam")


@pytest.fixture(params=["http", "grpc"])
def async_url(request, live_service) -> str:
    """The URL an AsyncClient is tested on: the gateway's, or the gRPC server's beside it."""
    return live_service.url if request.param == "http" else request.getfixturevalue("live_grpc_url")


def same_bits(a: FixedPoints, b: FixedPoints) -> bool:
    """Every array and the metadata of the same dtype, shape and bytes."""
    left, right = a.to_npz_arrays(), b.to_npz_arrays()
    return left.keys() == right.keys() and all(
        left[k].dtype == right[k].dtype and left[k].shape == right[k].shape and left[k].tobytes() == right[k].tobytes()
        for k in left
    )


def test_async_client_does_the_same(live_service, async_url, model_path, states):
    async def scenario() -> tuple[FixedPoints, FixedPoints, list[str], str]:
        async with AsyncClient(async_url) as client:
            model = await client.upload_model(model_path)
            job = await client.submit(model, states, **OPTIONS)
            statuses: list[str] = []
            await job.wait(progress=lambda record: statuses.append(record.status), timeout=120)
            fps = await job.result()
            both = await asyncio.gather(
                client.find_fixed_points(model.id, states, progress=False, **OPTIONS),
                client.list_jobs(),
            )
            with pytest.raises(JobNotFound):
                await client.get_job("no-such-job")
            assert job.id in {record.id for record in both[1]}
            return fps, both[0], statuses, job.id

    fps, again, statuses, job_id = asyncio.run(scenario())
    assert statuses[-1] == "succeeded"
    assert_same_fixed_points(fps, again)
    with Client(live_service.url) as client:
        assert_same_fixed_points(fps, client.find_fixed_points(model_path, states, progress=False, **OPTIONS))
        assert same_bits(fps, client.get_job(job_id).result())  # the same job reads the same over each transport


def test_async_client_manages_models_and_jobs_as_the_sync_client(live_service, async_url, model_path, states, tmp_path):
    """Every other AsyncClient call: models listed, read and deleted, jobs listed by status, cancelled and
    deleted; what it answers equals what the sync client answers over REST for the same records."""
    other = tmp_path / "tanh8-seed5.pt"
    torch.jit.save(torch.jit.script(TanhStep(seed=5)), str(other))
    endless = {"method": "adam", "max_iters": 1_000_000, "tol_q": 1e-300, "tol_dq": 0.0}
    big = np.random.default_rng(1).uniform(-1, 1, size=(4096, N_STATES))

    async def scenario() -> dict[str, object]:
        async with AsyncClient(async_url) as client:
            model = await client.upload_model(model_path)
            spare = await client.upload_model(other)
            listed = {m.id for m in await client.list_models()}
            read = await client.get_model(model.id)
            await client.delete_model(spare)
            with pytest.raises(ModelNotFound):
                await client.get_model(spare.id)
            job = await client.submit(model, big, **endless)
            while (await job.refresh()).status != "running":
                await asyncio.sleep(0.1)
            running = [record.id for record in await client.list_jobs("running")]
            assert (await job.cancel()).cancel_requested
            final = await job.wait(progress=False, timeout=30)
            with pytest.raises(JobCancelled):
                await job.result()
            await job.delete()
            with pytest.raises(JobNotFound):
                await job.refresh()
            return {
                "model": model,
                "read": read,
                "listed": listed,
                "spare": spare.id,
                "running": running,
                "final": final,
            }

    got = asyncio.run(scenario())
    with Client(live_service.url) as client:
        assert got["read"] == got["model"] == client.get_model(got["model"].id)
        assert got["model"].id in got["listed"] and got["spare"] in got["listed"]
        assert got["spare"] not in {m.id for m in client.list_models()}
        final = got["final"]
        assert final.status == "cancelled" and final.id in got["running"]
        with pytest.raises(JobNotFound):
            client.get_job(final.id)


def test_async_client_raises_what_the_sync_client_raises(live_service, async_url, model_path, states, tmp_path):
    """The same exception class, code and details over REST and gRPC, sync and async."""
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a TorchScript archive")

    def failures(model: Model) -> list[tuple[str, Callable[[Any], Any]]]:
        return [
            ("shape", lambda c: c.submit(model, np.zeros((3, N_STATES + 1)))),
            ("no model", lambda c: c.submit("0" * 64, states)),
            ("no job", lambda c: c.get_job("no-such-job")),
            ("no model record", lambda c: c.get_model("0" * 64)),
            ("option typo", lambda c: c.submit(model, states, methd="adam")),
            ("invalid model", lambda c: c.upload_model(garbage)),
            ("conflict", lambda c: c.submit(model, states[:5], idempotency_key="async-errors-key", **OPTIONS)),
        ]

    def described(exc: FpfError) -> tuple[type, ErrorCode, str, dict[str, Any]]:
        return type(exc), exc.code, exc.detail, exc.extra

    with Client(live_service.url) as client:
        model = client.upload_model(model_path)
        client.submit(model, states, idempotency_key="async-errors-key", **OPTIONS)
        expected = {}
        for name, call in failures(model):
            with pytest.raises(FpfError) as caught:
                call(client)
            expected[name] = described(caught.value)

    async def scenario() -> dict[str, tuple[type, ErrorCode, str, dict[str, Any]]]:
        got = {}
        async with AsyncClient(async_url) as client:
            for name, call in failures(model):
                with pytest.raises(FpfError) as caught:
                    await call(client)
                got[name] = described(caught.value)
        return got

    got = asyncio.run(scenario())
    assert got == expected
    assert [got[name][0] for name in ("shape", "no model", "no job", "invalid model", "conflict")] == [
        ShapeMismatch,
        ModelNotFound,
        JobNotFound,
        InvalidModel,
        IdempotencyConflict,
    ]


class NoStreamProxy(BaseHTTPRequestHandler):
    """A reverse proxy to the gateway that answers every ``/events`` request with plain JSON, as a proxy
    that cannot stream would; it keeps the paths it was asked for, and when they were asked. With
    ``drop_wait`` it also leaves out result requests' ``wait``, as a gateway without it would ignore it."""

    upstream = ""
    paths: list[str] = []
    times: list[float] = []
    drop_wait = False

    def _forward(self) -> None:
        self.paths.append(self.path)
        self.times.append(time.monotonic())
        if self.path.endswith("/events"):
            status, headers, body = 200, {"content-type": "application/json"}, b"{}"
        else:
            url = httpx.URL(self.upstream + self.path)
            if self.drop_wait:
                url = url.copy_remove_param("wait")
            length = int(self.headers.get("content-length") or 0)
            answer = httpx.request(
                self.command,
                url,
                headers={k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")},
                content=self.rfile.read(length),
                timeout=60,
            )
            status, body = answer.status_code, answer.content
            headers = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "retry-after")}
        self.send_response(status)
        for name, value in {**headers, "content-length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def no_stream_proxy(live_service) -> Iterator[type[NoStreamProxy]]:
    yield from _proxy(live_service)


@pytest.fixture
def no_wait_proxy(live_service) -> Iterator[type[NoStreamProxy]]:
    yield from _proxy(live_service, drop_wait=True)


def _proxy(live_service, drop_wait: bool = False) -> Iterator[type[NoStreamProxy]]:
    attributes = {"upstream": live_service.url, "paths": [], "times": [], "drop_wait": drop_wait}
    handler = type("Handler", (NoStreamProxy,), attributes)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_without_an_event_stream_the_wait_polls(live_service, no_stream_proxy, model_path, states, flavour):
    """Behind a proxy that cannot stream, both clients ask for the stream once and then poll the job
    (an endless one, cancelled once a poll has seen it running)."""
    endless = {"method": "adam", "max_iters": 1_000_000, "tol_q": 1e-300, "tol_dq": 0.0}
    seen: list[JobRecord] = []
    direct = Client(live_service.url)

    def see(record: JobRecord) -> None:
        seen.append(record)
        if record.status == "running" and not record.cancel_requested:
            direct.get_job(record.id).cancel()

    def sync() -> JobRecord:
        with Client(no_stream_proxy.url) as client:
            return client.submit(model_path, states, **endless).wait(progress=see, timeout=120)

    async def in_asyncio() -> JobRecord:
        async with AsyncClient(no_stream_proxy.url) as client:
            return await (await client.submit(model_path, states, **endless)).wait(progress=see, timeout=120)

    with direct:
        final = sync() if flavour == "sync" else asyncio.run(in_asyncio())
        assert final.status == "cancelled" and seen[-1] == final == direct.get_job(final.id).record
    assert any(record.status == "running" for record in seen)
    paths = no_stream_proxy.paths
    assert paths.count(f"/v1/jobs/{final.id}/events") == 1
    assert paths.count(f"/v1/jobs/{final.id}") == len(seen)


def test_a_gateway_that_does_not_wait_has_the_result_polled(live_service, no_wait_proxy, model_path, states):
    """A result asked for with a wait that the gateway ignores (answered job_not_finished at once) is
    asked again after growing pauses, not in a tight loop; here until the job is cancelled."""
    endless = {"method": "adam", "max_iters": 1_000_000, "tol_q": 1e-300, "tol_dq": 0.0}
    with Client(live_service.url) as direct, Client(no_wait_proxy.url) as client:
        job = client.submit(model_path, states, **endless)
        result_path = f"/v1/jobs/{job.id}/result"

        def cancel_after_six_asks() -> None:
            while sum(path.startswith(result_path) for path in no_wait_proxy.paths) < 6:
                time.sleep(0.01)
            direct.get_job(job.id).cancel()

        canceller = threading.Thread(target=cancel_after_six_asks, daemon=True)
        canceller.start()
        with pytest.raises(JobCancelled):
            job.result(timeout=120)
        canceller.join(timeout=60)
    asked = [
        at for at, path in zip(no_wait_proxy.times, no_wait_proxy.paths, strict=True) if path.startswith(result_path)
    ]
    assert len(asked) >= 6
    pauses = np.diff(asked)[:5]
    assert (pauses >= 0.05 * 1.5 ** np.arange(5)).all(), pauses  # the client's poll delays, at least
