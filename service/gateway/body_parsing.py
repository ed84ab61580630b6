"""Large JSON job bodies are parsed in a child process, so that neither the gateway's event loop nor its
memory carries them.

Parsing a JSON body of numbers into Python objects holds the GIL for most of its length, in any
thread of the gateway: ``/healthz`` and every other request would wait for it. A large body is
written to a temporary file as it arrives; a child process parses it and sends back the arrays.
Each child parses one body and exits, so its peak memory (the Python lists of a body take several
times its size) goes back to the system at once.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from fpf_client.errors import FpfError, ServiceUnavailable
from service.gateway.submission import Submission, parse_json_body

log = logging.getLogger(__name__)

#: Bodies up to this size are parsed in the gateway's threadpool (a child would take longer to start).
IN_PROCESS_MAX_BYTES = 4 * 2**20

#: Large bodies parsed at once; more wait their turn (it also bounds the memory the children take).
MAX_PARSER_PROCESSES = 2


class BodyParser:
    """Parses JSON job bodies: small ones in the threadpool, large ones in a child process."""

    def __init__(self, max_processes: int = MAX_PARSER_PROCESSES) -> None:
        self.max_processes = max_processes
        self._pool: ProcessPoolExecutor | None = None

    async def parse(self, request: Request) -> Submission:
        """The submission in the request's JSON body, or the fpf error it deserves.

        The first ``IN_PROCESS_MAX_BYTES`` are kept in memory; a longer body goes on to a temporary
        file as it arrives, which the child reads, so the gateway never holds a large body.
        """
        stream = request.stream()
        head = bytearray()
        async for chunk in stream:
            head += chunk
            if len(head) > IN_PROCESS_MAX_BYTES:
                break
        else:
            return await run_in_threadpool(parse_json_body, bytes(head))
        with tempfile.NamedTemporaryFile(prefix="fpf-body-", suffix=".json") as spill:
            spill.write(head)
            del head
            async for chunk in stream:
                spill.write(chunk)  # one chunk into the page cache: microseconds
            spill.flush()
            return await self._parse_file(spill.name)

    async def _parse_file(self, path: str) -> Submission:
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(self._executor(), _parse_in_child, path)
        except BrokenProcessPool as exc:
            self._pool = None  # a child died (killed for memory?): the next body gets a new pool
            log.error("the body parser process died: %s", exc)
            raise ServiceUnavailable("the process parsing the request body died; try again", retry_after_s=1) from exc
        if isinstance(outcome, dict):
            raise FpfError.from_problem(outcome)
        return outcome

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: the gateway has threads, and a forked copy of its memory would defeat the purpose.
            self._pool = ProcessPoolExecutor(
                self.max_processes, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
            )
        return self._pool


def _parse_in_child(path: str) -> Submission | dict[str, Any]:
    """In the child: the submission in the body at ``path``, or the problem document of the error
    (exceptions do not keep their fields across processes; ``FpfError.from_problem`` rebuilds the
    same class on the other side)."""
    try:
        return parse_json_body(Path(path).read_bytes())
    except FpfError as exc:
        return exc.to_problem()
