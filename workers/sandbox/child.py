"""The sandboxed child: loads models and runs the engine for its worker, over frames on stdin/stdout.

Run by :func:`workers.sandbox.command.child_command` inside bubblewrap. Before anything
untrusted arrives it caps its own resources (an unprivileged process can lower its limits
but never raise them again), moves the protocol off fds 0 and 1 (so that a model's prints
cannot corrupt it), then imports torch and the engine and says ``ready``.

Requests (worker -> child): ``describe`` and ``solve`` name a model record; when the child
does not hold that model it answers ``need_model`` and the worker sends ``model`` with the
file's bytes. A ``solve`` carries the jobs of a batch (one engine call; their arrays ``.npz``
one after another in the payload). Answers (child -> worker): ``progress`` while solving
(naming the job of the batch, or none for all), then one of ``described``, ``result`` (per
job a result ``.npz`` in the payload, or a problem document) or ``error`` (a problem
document, for the whole request).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

from .frames import FrameError, read_frame, write_frame

#: Loaded models kept per child.
CACHED_MODELS = 4
#: The worker is trusted; this only bounds a corrupted stream.
MAX_REQUEST_BYTES = 1 << 40
MODEL_DIR = Path("/tmp/models")


def limit_resources(memory_bytes: int, disk_bytes: int, open_files: int) -> None:
    """Set soft = hard limits on private memory, file size, descriptors and core dumps."""
    for limit, value in (
        (resource.RLIMIT_DATA, memory_bytes),
        (resource.RLIMIT_FSIZE, disk_bytes),
        (resource.RLIMIT_NOFILE, open_files),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value))
    # A write past the size limit fails with EFBIG instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def protocol_streams() -> tuple[BinaryIO, BinaryIO]:
    """The worker's pipes, moved to fresh descriptors; fd 0 becomes /dev/null and fd 1 a copy of stderr."""
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return requests, answers


class Child:
    """Serve one request at a time until the worker closes the pipe."""

    def __init__(self, requests: BinaryIO, answers: BinaryIO) -> None:
        self.requests = requests
        self.answers = answers
        self.models: OrderedDict[tuple[str | None, ...], Any] = OrderedDict()

    def serve(self) -> None:
        write_frame(self.answers, {"type": "ready"})
        while True:
            try:
                request, payload = read_frame(self.requests, MAX_REQUEST_BYTES)
            except FrameError:
                return
            self.answer(request, payload)

    def answer(self, request: dict[str, Any], payload: bytes) -> None:
        """Handle one request; every failure becomes an ``error`` frame with a problem document."""
        from fpf_client.errors import FpfError

        try:
            received = time.monotonic()
            model = self.model(request["model"])
            if request["op"] == "describe":
                write_frame(self.answers, {"type": "described", "model": model.describe()})
            elif request["op"] == "solve":
                limits = dict(request.get("limits") or {})
                if "time_limit_s" in limits:  # loading the model took part of it
                    limits["time_limit_s"] = max(0.0, limits["time_limit_s"] - (time.monotonic() - received))
                answers, results, engine_s = self.solve(model, payload, request["jobs"], request["options"], **limits)
                write_frame(self.answers, {"type": "result", "engine_s": engine_s, "jobs": answers}, *results)
            else:
                raise FpfError(f"unknown request {request['op']!r}")
        except FpfError as exc:
            write_frame(self.answers, {"type": "error", "problem": exc.to_problem()})
        except Exception as exc:
            problem = FpfError(f"{type(exc).__name__}: {exc}").to_problem()
            write_frame(self.answers, {"type": "error", "problem": problem})

    def model(self, record: dict[str, Any]) -> Any:
        """The loaded StepModel of ``record``, asking the worker for its bytes the first time.

        Cached by model id, dynamics and tensor names: within one tenant, later records of a
        model differ from the first only by the shapes that validating it found.
        """
        from workers.engine import load_model
        from workers.engine.models.formats import NAMING_FIELDS

        naming = {name: record.get(name) for name in NAMING_FIELDS}
        key = (record["id"], record.get("dynamics", "discrete"), *naming.values())
        if key in self.models:
            self.models.move_to_end(key)
            return self.models[key]
        write_frame(self.answers, {"type": "need_model", "id": record["id"]})
        header, data = read_frame(self.requests, MAX_REQUEST_BYTES)
        if header.get("op") != "model" or header.get("id") != record["id"]:
            raise FrameError(f"expected the bytes of model {record['id']}, got {header}")
        MODEL_DIR.mkdir(exist_ok=True)
        path = MODEL_DIR / record["id"]
        path.write_bytes(data)
        try:
            model = load_model(
                path,
                format=record.get("format"),
                n_states=record.get("n_states"),
                n_inputs=record.get("n_inputs"),
                dynamics=key[1],
                **naming,
            )
        finally:
            path.unlink()  # loaders read the whole file (archives are extracted elsewhere)
        self.models[key] = model
        if len(self.models) > CACHED_MODELS:
            self.models.popitem(last=False)
        return model

    def solve(
        self,
        model: Any,
        payload: memoryview,
        jobs: list[dict[str, int]],
        options: dict[str, Any],
        *,
        time_limit_s: float | None = None,
    ) -> tuple[list[dict[str, Any]], list[bytes | memoryview], float]:
        """Run the engine once on the arrays of every job of a batch (``payload``: their ``.npz`` files
        one after another, ``jobs``: each one's ``arrays_bytes`` and ``max_result_bytes``), its search
        stopped after ``time_limit_s``. Per job, an answer (``result_bytes``, or a ``problem``) and its
        result as ``.npz`` bytes; then the engine's seconds."""
        from fpf_client.errors import FpfError
        from fpf_client.options import FinderOptions
        from workers.results import ResultFile
        from workers.solving import JobArrays, solve_jobs

        arrays, offset = [], 0
        for job in jobs:
            arrays.append(JobArrays.load(payload[offset : offset + job["arrays_bytes"]]))
            offset += job["arrays_bytes"]
        outcomes, engine_s = solve_jobs(
            model, arrays, FinderOptions.model_validate(options), self.report, time_limit_s=time_limit_s
        )
        answers: list[dict[str, Any]] = []
        results: list[bytes | memoryview] = []
        for job, outcome in zip(jobs, outcomes, strict=True):
            try:
                if isinstance(outcome, FpfError):
                    raise outcome
                npz = ResultFile.of(outcome, job.get("max_result_bytes")).npz
            except FpfError as exc:
                answers.append({"problem": exc.to_problem()})
                continue
            results.append(npz)
            answers.append({"result_bytes": memoryview(npz).nbytes})
        return answers, results, engine_s

    def report(self, progress: dict[str, Any], job: int | None) -> None:
        """The engine's progress callback: forward the report of job ``job`` of the batch (None: all of
        them), numpy scalars as Python numbers."""
        plain = {k: v.item() if hasattr(v, "item") else v for k, v in progress.items()}
        write_frame(self.answers, {"type": "progress", "progress": plain, "job": job})


def warm_up() -> None:
    """Run the engine once on a tiny built-in map, so that its imports, lazy ones included (torch's
    dynamo), happen while the child starts and not in a tenant's first request."""
    import numpy as np
    import torch

    from workers.engine import as_step_model, find_fixed_points

    try:
        model = as_step_model(lambda u, h: torch.tanh(0.5 * h + u), n_states=4, n_inputs=4)
        find_fixed_points(model, np.full((4, 4), 0.5), np.zeros((1, 4)))
    except Exception:  # only a head start: the first request pays instead
        logging.getLogger(__name__).warning("sandbox warm-up failed", exc_info=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="workers.sandbox.child")
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--disk-bytes", type=int, required=True)
    parser.add_argument("--open-files", type=int, required=True)
    args = parser.parse_args(argv)
    limit_resources(args.memory_bytes, args.disk_bytes, args.open_files)
    requests, answers = protocol_streams()
    sys.stdout = sys.stderr
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    warm_up()
    Child(requests, answers).serve()


if __name__ == "__main__":
    main()
