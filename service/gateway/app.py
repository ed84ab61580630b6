"""The gateway: ``create_app`` builds the FastAPI application (``uvicorn --factory service.gateway.app:create_app``).

It validates requests, stores models and arrays, queues work for the Celery workers
and serves status, events and results. It never imports torch nor the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry

from service.core.api_keys import KeyStore
from service.core.artifacts import ArtifactStore
from service.core.janitor import Janitor, JanitorPolicy
from service.core.outages import async_redis_client, bound_broker, redis_client
from service.core.queue import Dispatcher, make_celery
from service.core.settings import Settings, get_settings
from service.core.store import RecordStore
from service.gateway.auth import Authenticator
from service.gateway.body_parsing import BodyParser
from service.gateway.limits import BodySizeLimit
from service.gateway.metrics import JobMetrics
from service.gateway.problems import install_problem_handlers
from service.gateway.quotas import QuotaLimits, Quotas
from service.gateway.routes import health, jobs, models
from service.gateway.web import routes as web


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway application for ``settings`` (default: from ``FPF_*`` environment variables)."""
    settings = settings or get_settings()
    store = RecordStore(redis_client(settings), settings.redis_prefix, result_ttl_s=settings.result_ttl_s)
    artifacts = ArtifactStore(settings.data_dir)
    dispatcher = Dispatcher(bound_broker(make_celery(settings), settings), settings.queue)
    janitor = Janitor(store, artifacts, dispatcher, JanitorPolicy.of(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.async_redis = async_redis_client(settings)
        sweeping = asyncio.create_task(janitor.run(settings.janitor_interval_s))
        try:
            yield
        finally:
            app.state.body_parser.close()
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeping
            await app.state.async_redis.aclose()

    # Swagger UI from the files of the fastapi-offline package, so /docs works without internet; no
    # validator badge (it would ask validator.swagger.io) and no ReDoc (its bundle loads a logo from a CDN).
    app = FastAPIOffline(
        static_url="/docs/static",
        redoc_url=None,
        swagger_ui_parameters={"validatorUrl": None},
        title="fpf",
        summary="Fixed points of recurrent neural networks, as a service",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.artifacts = artifacts
    app.state.dispatcher = dispatcher
    app.state.body_parser = BodyParser()
    app.state.authenticator = Authenticator(KeyStore(settings.keys_file))
    app.state.quotas = Quotas(QuotaLimits.of(settings), store)
    app.state.metrics_registry = CollectorRegistry()
    app.state.metrics_registry.register(JobMetrics(store, settings.queue))

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_problem_handlers(app, unavailable_retry_after_s=settings.unavailable_retry_after_s)
    for router in (models.router, jobs.router, health.router):
        app.include_router(router)
    web.install(app)
    return app
