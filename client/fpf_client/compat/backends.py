"""Where a compat search runs: an fpf service (``url=`` or ``FPF_URL``), else the engine in-process."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ..fixed_points import FixedPoints
from ..options import FinderOptions

#: Receives each progress report: a dict in-process, a JobRecord's ``progress`` from a service;
#: ``True`` instead draws the client's progress bar for a service job (in a terminal), ``None`` nothing.
ProgressPrinter = Callable[[Any], None]
Progress = ProgressPrinter | bool | None


class Backend(Protocol):
    where: str

    def find(
        self,
        model: Any,
        initial_states: np.ndarray,
        inputs: np.ndarray,
        cond_ids: np.ndarray | None,
        options: FinderOptions,
        progress: Progress,
    ) -> FixedPoints: ...


class ServiceBackend:
    """Runs searches as jobs on an fpf service; a torch module is scripted and uploaded once."""

    def __init__(self, url: str, api_key: str | None, transport: str | None) -> None:
        from ..client import Client

        self.client = Client(url, api_key=api_key, transport=transport)
        self.where = self.client.url
        self._uploaded: dict[int, Any] = {}

    def find(
        self,
        model: Any,
        initial_states: np.ndarray,
        inputs: np.ndarray,
        cond_ids: np.ndarray | None,
        options: FinderOptions,
        progress: Progress,
    ) -> FixedPoints:
        from ..payloads import is_local_model

        if is_local_model(model):
            key = id(model)
            if key not in self._uploaded:
                self._uploaded[key] = self.client.upload_model(
                    model, n_states=initial_states.shape[1], n_inputs=inputs.shape[1]
                )
            model = self._uploaded[key]
        job = self.client.submit(
            model, initial_states, inputs, cond_ids=cond_ids, **options.model_dump(exclude_defaults=True)
        )
        job.wait(progress=(lambda record: progress(record.progress)) if callable(progress) else bool(progress))
        return job.result()


class LocalBackend:
    """Runs searches with the engine in this process (``pip install 'fpf[worker]'``)."""

    where = "in-process"

    def __init__(self) -> None:
        from workers.engine.finder import find_fixed_points

        self._find = find_fixed_points

    def find(
        self,
        model: Any,
        initial_states: np.ndarray,
        inputs: np.ndarray,
        cond_ids: np.ndarray | None,
        options: FinderOptions,
        progress: Progress,
    ) -> FixedPoints:
        printer = progress if callable(progress) else None
        found: FixedPoints = self._find(model, initial_states, inputs, options, progress=printer, cond_ids=cond_ids)
        return found


def open_backend(url: str | None, api_key: str | None, transport: str | None) -> Backend:
    """The service named by ``url`` (or ``FPF_URL``), else the in-process engine.

    Raises
    ------
    RuntimeError
        When no service is named and the engine is not installed: the message says how to get either.
    """
    url = url or os.environ.get("FPF_URL")
    if url:
        return ServiceBackend(url, api_key, transport)
    try:
        return LocalBackend()
    except ImportError as exc:
        raise RuntimeError(
            "FixedPointFinder needs somewhere to run: name an fpf service with url='http://host:8000' (or set "
            "FPF_URL; start one with `fpf-server up`), or install the engine to run in this process "
            f"(pip install 'fpf[worker]'). The engine could not be imported: {exc}"
        ) from None
