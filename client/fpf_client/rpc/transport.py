"""The client's gRPC transports: the operations of :class:`fpf_client.transport.Transport` and
:class:`fpf_client.transport.AsyncTransport` as RPCs, over ``grpc`` and ``grpc.aio`` channels.

``grpc://host:port`` opens a plaintext channel, ``grpcs://host:port`` a TLS one. The API key
travels as the ``authorization: Bearer KEY`` metadata; failures raise the same
:class:`~fpf_client.errors.FpfError` subclasses as over REST. What each call sends and how its
answer reads is in :mod:`fpf_client.rpc.calls`; only sending differs between the two classes.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Generator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
import grpc.aio

from .. import protocol, retry
from ..fixed_points import FixedPoints
from ..payloads import ArraysPayload, ModelFile, UploadHints
from ..records import JobRecord, Model
from ..retry import RetryPolicy
from . import calls, codec
from .calls import RpcCall
from .stubs import load

T = TypeVar("T")

#: gRPC's reconnection backoff grows to two minutes by default: a restarted server would stay
#: unreached long after it is back. The client's own retries pace the attempts instead.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


def channel_target(url: str) -> tuple[str, bool]:
    """``(host:port, use TLS)`` of ``grpc://host:port``, ``grpcs://host:port`` or a bare ``host:port``."""
    parts = urlsplit(url if "//" in url else f"grpc://{url}")
    if not parts.hostname or parts.port is None:
        raise ValueError(f"a gRPC address needs a host and a port, like grpc://127.0.0.1:50051; got {url!r}")
    return parts.netloc, parts.scheme in ("grpcs", "https")


def _watch_timeout(deadline: float) -> float | None:
    """The WatchJob stream's own deadline: the wait's, if it has one."""
    left = protocol.seconds_left(deadline)
    return None if math.isinf(left) else max(left, 0.0)


class _GrpcBase:
    """What both gRPC transports share: the target, metadata, retry policy and error mapping.

    Parameters
    ----------
    url : str
        ``grpc://host:port`` (or ``grpcs://`` for TLS).
    api_key : str, optional
        Sent as ``authorization: Bearer <api_key>`` metadata.
    timeout : float
        Deadline of each unary call, in seconds; streams (uploads, results, watching) have none
        of their own, like REST's per-read timeout.
    retry_policy : RetryPolicy
        How calls are retried through outages (every call here is idempotent: submissions carry
        an idempotency key).
    """

    def __init__(
        self, url: str, api_key: str | None, timeout: float, retry_policy: RetryPolicy = RetryPolicy()
    ) -> None:
        self.url = url
        self.retry_policy = retry_policy
        #: Whether the server has ever answered: until then a refused connection is a wrong address.
        self.reached = False
        self.target, self.tls = channel_target(url)
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.timeout = timeout

    def _credentials(self) -> grpc.ChannelCredentials | None:
        return grpc.ssl_channel_credentials() if self.tls else None

    def _deadline(self, call: RpcCall[Any]) -> float | None:
        return self.timeout if call.deadline else None

    def _error(self, exc: grpc.RpcError) -> Exception:
        """The FpfError of a failed call, noting whether the server answered it at all."""
        error = codec.error_of_rpc(exc, self.url)
        if not codec.answered_by_fpf(exc) and exc.code() is grpc.StatusCode.UNAVAILABLE:
            return retry.mark_unreached(error)
        self.reached = True
        return error

    def _seen(self) -> bool:
        return self.reached


class GrpcTransport(_GrpcBase):
    """A blocking channel to the fpf gRPC server and the calls made over it (see :class:`_GrpcBase`)."""

    def __init__(
        self, url: str, api_key: str | None, timeout: float, retry_policy: RetryPolicy = RetryPolicy()
    ) -> None:
        super().__init__(url, api_key, timeout, retry_policy)
        credentials = self._credentials()
        self.channel = (
            grpc.secure_channel(self.target, credentials, options=CHANNEL_OPTIONS)
            if credentials is not None
            else grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        )
        self.stub = load().pb2_grpc.FixedPointServiceStub(self.channel)

    def send(self, call: RpcCall[T]) -> T:
        """Make ``call``, retried through outages as the retry policy says."""
        method = getattr(self.stub, call.method)

        def once() -> T:
            try:
                answer = method(call.request(), timeout=self._deadline(call), metadata=self.metadata)
            except grpc.RpcError as exc:
                raise self._error(exc) from exc
            self.reached = True
            return call.decode(answer)

        return retry.call(self.retry_policy, once, call.what, done_if=call.done_if, seen=self._seen)

    def close(self) -> None:
        self.channel.close()

    def upload_model(self, model: ModelFile, hints: UploadHints) -> Model:
        return self.send(calls.upload_model(model, hints))

    def get_model(self, model_id: str) -> Model:
        return self.send(calls.get_model(model_id))

    def list_models(self) -> list[Model]:
        return self.send(calls.list_models())

    def delete_model(self, model_id: str) -> None:
        self.send(calls.delete_model(model_id))

    def submit_job(
        self, model_id: str, arrays: ArraysPayload, options: dict[str, Any], idempotency_key: str | None
    ) -> JobRecord:
        return self.send(calls.submit_job(model_id, arrays, options, idempotency_key))

    def get_job(self, job_id: str) -> JobRecord:
        return self.send(calls.get_job(job_id))

    def list_jobs(self, status: str | None) -> list[JobRecord]:
        return self.send(calls.list_jobs(status))

    def cancel_job(self, job_id: str) -> None:
        self.send(calls.cancel_job(job_id))

    def delete_job(self, job_id: str) -> None:
        self.send(calls.delete_job(job_id))

    def job_result(self, job_id: str, wait_s: float = 0.0) -> FixedPoints:
        """Assemble the streamed arrays in place; equal, bit for bit, to the REST ``.npz``. A stream
        broken by an outage is fetched again from its start."""

        def fetch() -> FixedPoints:
            assembler = codec.ResultAssembler()
            stream = self.stub.GetResult(calls.get_result_request(job_id, wait_s), metadata=self.metadata)
            try:
                for chunk in stream:
                    assembler.add(chunk)
            except grpc.RpcError as exc:
                raise self._error(exc) from exc
            return FixedPoints.from_npz_arrays(assembler.finish())

        return retry.call(self.retry_policy, fetch, "gRPC GetResult", seen=self._seen)

    def job_events(self, job_id: str, deadline: float) -> Generator[JobRecord, None, None]:
        """Job records from WatchJob until the job ends or the deadline passes; on any trouble the
        stream just ends (the caller checks the job and may watch again, as with REST)."""
        stream = self.stub.WatchJob(
            calls.watch_job_request(job_id), metadata=self.metadata, timeout=_watch_timeout(deadline)
        )
        try:
            for message in stream:
                yield calls.job_of(message)
        except grpc.RpcError:
            return
        finally:
            stream.cancel()


class AsyncGrpcTransport(_GrpcBase):
    """A ``grpc.aio`` channel to the fpf gRPC server and the calls made over it (see :class:`_GrpcBase`).

    The channel belongs to an event loop, so it is opened by the first call rather than here: an
    :class:`~fpf_client.AsyncClient` may be made before its loop runs.
    """

    def __init__(
        self, url: str, api_key: str | None, timeout: float, retry_policy: RetryPolicy = RetryPolicy()
    ) -> None:
        super().__init__(url, api_key, timeout, retry_policy)
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    @property
    def stub(self) -> Any:
        """The service's stub on this transport's channel (opened on first use)."""
        if self._stub is None:
            credentials = self._credentials()
            self._channel = (
                grpc.aio.secure_channel(self.target, credentials, options=CHANNEL_OPTIONS)
                if credentials is not None
                else grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
            )
            self._stub = load().pb2_grpc.FixedPointServiceStub(self._channel)
        return self._stub

    async def send(self, call: RpcCall[T]) -> T:
        """Make ``call``, retried through outages as the retry policy says."""
        method = getattr(self.stub, call.method)

        async def once() -> T:
            try:
                answer = await method(call.request(), timeout=self._deadline(call), metadata=self.metadata)
            except grpc.RpcError as exc:
                raise self._error(exc) from exc
            self.reached = True
            return call.decode(answer)

        return await retry.acall(self.retry_policy, once, call.what, done_if=call.done_if, seen=self._seen)

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def upload_model(self, model: ModelFile, hints: UploadHints) -> Model:
        return await self.send(calls.upload_model(model, hints))

    async def get_model(self, model_id: str) -> Model:
        return await self.send(calls.get_model(model_id))

    async def list_models(self) -> list[Model]:
        return await self.send(calls.list_models())

    async def delete_model(self, model_id: str) -> None:
        await self.send(calls.delete_model(model_id))

    async def submit_job(
        self, model_id: str, arrays: ArraysPayload, options: dict[str, Any], idempotency_key: str | None
    ) -> JobRecord:
        return await self.send(calls.submit_job(model_id, arrays, options, idempotency_key))

    async def get_job(self, job_id: str) -> JobRecord:
        return await self.send(calls.get_job(job_id))

    async def list_jobs(self, status: str | None) -> list[JobRecord]:
        return await self.send(calls.list_jobs(status))

    async def cancel_job(self, job_id: str) -> None:
        await self.send(calls.cancel_job(job_id))

    async def delete_job(self, job_id: str) -> None:
        await self.send(calls.delete_job(job_id))

    async def job_result(self, job_id: str, wait_s: float = 0.0) -> FixedPoints:
        """The result as :meth:`GrpcTransport.job_result` assembles it."""

        async def fetch() -> FixedPoints:
            assembler = codec.ResultAssembler()
            stream = self.stub.GetResult(calls.get_result_request(job_id, wait_s), metadata=self.metadata)
            try:
                async for chunk in stream:
                    assembler.add(chunk)
            except grpc.RpcError as exc:
                raise self._error(exc) from exc
            return FixedPoints.from_npz_arrays(assembler.finish())

        return await retry.acall(self.retry_policy, fetch, "gRPC GetResult", seen=self._seen)

    async def job_events(self, job_id: str, deadline: float) -> AsyncGenerator[JobRecord, None]:
        """Job records from WatchJob, as :meth:`GrpcTransport.job_events` gives them."""
        stream = self.stub.WatchJob(
            calls.watch_job_request(job_id), metadata=self.metadata, timeout=_watch_timeout(deadline)
        )
        try:
            async for message in stream:
                yield calls.job_of(message)
        except grpc.RpcError:
            return
        finally:
            stream.cancel()
