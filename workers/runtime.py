"""Per-process setup of a pool process: thread counts first, then torch and the engine, imported warm."""

from __future__ import annotations

import logging
import os

from service.core.settings import Settings

log = logging.getLogger(__name__)

#: Processes in this worker's pool; set in the parent by ``worker_init`` and inherited at fork.
POOL_CONCURRENCY = 1

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def prepare_pool_process(settings: Settings) -> None:
    """Limit threads to this process's share of the cores and import the engine (a failure is logged;
    the first job then reports it)."""
    threads = settings.torch_threads(POOL_CONCURRENCY)
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
        import workers.engine  # noqa: F401  (warm import: the first job does not pay for it)
    except Exception:
        log.exception("pool process %d: could not prepare torch and the engine", os.getpid())
        return
    log.info("pool process %d ready with %d torch threads", os.getpid(), threads)
