"""Settings shared by the gateway and the workers, read from ``FPF_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Seconds a job or a validation may wait for its model sandbox to start: their time limits count
#: from the moment the sandbox is ready, and Celery's limits of their tasks allow this much more.
SANDBOX_START_ALLOWANCE_S = 60.0


class Settings(BaseSettings):
    """Every knob of the service, with its default; ``FPF_REDIS_URL`` sets ``redis_url`` and so on."""

    model_config = SettingsConfigDict(env_prefix="FPF_", extra="ignore")

    # --- where things live ------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Job store and Celery broker.")
    redis_prefix: str = Field("fpf", description="Prefix of every Redis key (and broker key) fpf writes.")
    data_dir: Path = Field(Path("var/data"), description="Models, job arrays and results (shared volume).")
    queue: str = Field("gpu", description="Celery queue the jobs are sent to.")

    # --- Redis outages (gateway and gRPC server) ----------------------------------------
    redis_connect_timeout_s: float = Field(
        1.0, gt=0, description="The gateway gives up connecting to Redis (job store and broker) after this."
    )
    redis_socket_timeout_s: float = Field(
        2.0, gt=0, description="The gateway gives up waiting for one Redis reply after this (a frozen Redis)."
    )
    unavailable_retry_after_s: int = Field(
        5, ge=1, description="Retry-After of a 503 service_unavailable answer (Redis or the queue unreachable)."
    )
    readyz_timeout_s: float = Field(
        4.0, gt=0, description="/readyz answers 503 when its checks (Redis, a worker ping) take longer."
    )

    # --- request limits ---------------------------------------------------------------
    max_body_bytes: int = Field(256 * 2**20, ge=1024, description="Largest request body (uploads included).")
    max_initial_states: int = Field(1_000_000, ge=1, description="Most initial states in one job.")
    max_array_elements: int = Field(50_000_000, ge=1, description="Most elements in one uploaded array.")
    max_n_states: int = Field(65536, ge=1, description="Most state dimensions of a model (and of a job's states).")
    max_n_inputs: int = Field(65536, ge=0, description="Most input dimensions of a model (and of a job's inputs).")
    max_result_bytes: int = Field(
        2**30,
        ge=2**20,
        description="Largest result file; a job whose result would be larger fails with result_too_large.",
    )

    # --- access and quotas -------------------------------------------------------------
    keys_file: Path = Field(Path("var/keys.json"), description="API-key hashes; keep it out of data_dir.")
    quota_queued_jobs: int = Field(100, ge=1, description="Most queued jobs per tenant.")
    quota_running_jobs: int | None = Field(
        None, ge=1, description="Most running jobs per tenant; more wait queued. None: no limit."
    )
    running_quota_retry_s: float = Field(
        5.0, gt=0, description="A job whose tenant is at its running limit is tried again this much later."
    )
    quota_stored_bytes: int = Field(
        20 * 2**30, ge=0, description="Most bytes of models, arrays and results per tenant."
    )
    quota_retry_after_s: int = Field(30, ge=1, description="Retry-After of a 429 quota_exceeded answer.")

    # --- execution --------------------------------------------------------------------
    soft_time_limit_s: float = Field(
        3600.0, gt=0, description="Wall time of a run: then the search stops and the job succeeds, partial."
    )
    hard_time_limit_s: float = Field(
        3660.0, gt=0, description="A run still going after this fails with time_limit_exceeded."
    )
    kill_grace_s: float = Field(
        30.0,
        gt=0,
        description="Seconds past a task's hard limit before Celery kills the pool process still running it "
        "(a model step stuck in native code never sees the limit); validations wait at most 10 s of it.",
    )
    validation_time_limit_s: float = Field(
        30.0,
        gt=0,
        description="Wall time of loading and dry-running an uploaded model; a model past it is "
        "tried once more, then invalid with validation_timeout.",
    )
    batch_max_jobs: int = Field(
        32,
        ge=1,
        description="Most jobs a worker solves in one engine call: queued jobs of the same tenant, model "
        "and options are taken together (service/core/batching.py). 1 turns batching off.",
    )
    batch_window_ms: float = Field(
        0.0,
        ge=0,
        description="A worker that has claimed a job and found room in its batch waits this long for more "
        "jobs of the same batch key to arrive before the engine starts.",
    )
    worker_torch_threads: int | None = Field(
        None, ge=1, description="torch threads per worker process; default: CPU cores / worker concurrency."
    )

    # --- model sandbox (workers/sandbox) ----------------------------------------------
    sandbox: Literal["on", "off"] = Field(
        "on", description="Run every model in a bubblewrap sandbox; off only where all models are trusted."
    )
    sandbox_memory_bytes: int = Field(16 * 2**30, ge=2**28, description="Private memory of one model sandbox.")
    sandbox_cpu_s: float | None = Field(
        None, gt=0, description="CPU seconds one job may use; default: soft time limit x torch threads."
    )
    sandbox_disk_bytes: int = Field(2**30, ge=2**20, description="Size of a sandbox's /tmp, and its largest file.")
    sandbox_spare: bool = Field(True, description="Keep a spare sandbox started, so that a new tenant waits for none.")
    sandbox_warm_owners: int = Field(
        2,
        ge=1,
        description="Tenants per worker process whose sandbox stays started between their jobs; the least "
        "recently served one's is closed when another tenant needs room.",
    )

    # --- recovery and retention -------------------------------------------------------
    heartbeat_interval_s: float = Field(1.0, gt=0, description="How often a running job refreshes its heartbeat.")
    heartbeat_ttl_s: float = Field(6.0, gt=0, description="A running job whose heartbeat is older is lost.")
    janitor_interval_s: float = Field(
        1.0, gt=0, description="How often the gateway looks for lost jobs and messages, expired jobs, orphaned files."
    )
    max_attempts: int = Field(3, ge=1, description="Runs of one job (lost workers included) before it fails.")
    resend_queued_after_s: float = Field(
        60.0, gt=0, description="A queued job whose message is in no queue this long after it was due is sent again."
    )
    orphan_after_s: float = Field(
        3600.0, gt=0, description="Job directories without a job record are deleted once this old."
    )
    result_ttl_s: float = Field(7 * 24 * 3600.0, gt=0, description="Finished jobs and their files are kept this long.")
    worker_ping_timeout_s: float = Field(1.0, gt=0, description="/readyz waits this long for a worker to answer.")
    worker_presence_ttl_s: float = Field(
        60.0, gt=0, description="A worker's report of its devices counts this long after it was last refreshed."
    )

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.hard_time_limit_s <= self.soft_time_limit_s:
            raise ValueError("hard_time_limit_s must exceed soft_time_limit_s")
        if self.readyz_timeout_s <= self.worker_ping_timeout_s:
            raise ValueError("readyz_timeout_s must exceed worker_ping_timeout_s")
        if self.heartbeat_ttl_s <= 2 * self.heartbeat_interval_s:
            raise ValueError("heartbeat_ttl_s must be more than twice heartbeat_interval_s")
        return self

    @property
    def start_allowance_s(self) -> float:
        """Seconds a run may spend starting its model's sandbox before its time limits begin (none
        where models run in the pool process)."""
        return SANDBOX_START_ALLOWANCE_S if self.sandbox == "on" else 0.0

    @property
    def run_task_time_limit_s(self) -> float:
        """Celery's soft time limit of a job's task, counted from its start: the hard limit plus the
        start allowance. Sandboxed, the worker enforces the hard limit itself from the moment the
        sandbox is ready, and Celery's limit is a backstop."""
        return self.hard_time_limit_s + self.start_allowance_s

    @property
    def kill_time_limit_s(self) -> float:
        """Celery kills a pool process still running a job after this (it did not stop at the hard limit)."""
        return self.run_task_time_limit_s + self.kill_grace_s

    @property
    def broker_visibility_timeout_s(self) -> int:
        """Redis redelivers an unacknowledged message after this; kept above every time limit."""
        return int(self.kill_time_limit_s) + 600

    def torch_threads(self, concurrency: int) -> int:
        """Threads per pool process, so that the pool does not oversubscribe the cores."""
        if self.worker_torch_threads is not None:
            return self.worker_torch_threads
        return max(1, (os.cpu_count() or 1) // max(1, concurrency))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
