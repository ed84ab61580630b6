"""The solve stage: the chosen solver over chunks of initial states that fit in memory.

The requests of a batch share one pass when their method's samples are independent of their
batch (:func:`.run.batchable`); otherwise they are solved one after the other. Either way each
request gets back a :class:`~workers.engine.solvers.SolveResult` of its own initial states, and,
where the samples the mixing leaves take their LM steps with the midpoint restarts
(:attr:`.run.Run.newton_with_restarts`), the :class:`~workers.engine.solvers.strategies.warm_start.Handover`
of those samples.
"""

from __future__ import annotations

import os
import resource

import numpy as np
import torch

from fpf_client.options import FinderOptions, NewtonKrylovOptions

from ..models import StepModel
from ..solvers import Problem, SolveResult, Status, get_solver
from ..solvers.methods.lm import mix_before_lm
from ..solvers.strategies.warm_start import Handover
from .inputs import Search
from .reporting import Reporter
from .run import Run

#: Fraction of free memory a chunk may use, and the largest chunk (keeps progress flowing).
MEMORY_FRACTION = 0.25
MAX_CHUNK = 65536
#: On the host, a chunk's budgeted working set is kept near this size: each solver step allocates
#: temporaries of the chunk's size, and past tens of MB the allocator maps fresh pages for every
#: one of them (page faults and zeroing on each kernel) instead of reusing its heap.
HOST_CHUNK_BYTES = 64 << 20
#: ... but a host chunk keeps at least this many samples, or per-step Python overhead dominates.
HOST_MIN_CHUNK = 1024
#: Methods whose chunk is their problem: Adam minimises the mean q of its chunk, so its chunks stay
#: as large as memory allows, as in the reference.
WHOLE_CHUNK_METHODS = frozenset({"adam"})


FirstPass = tuple[SolveResult, Handover | None]


def solve(searches: list[Search], run: Run, reporter: Reporter) -> list[FirstPass]:
    """Each request's solver outcome, and what its mixing left to the restarts' LM (or None), from
    one shared pass where the method allows it."""
    if run.batchable and len(searches) > 1:
        return _solve_together(searches, run, reporter)
    return [_solve_one(run, s.x0, s.sample_inputs(), reporter) for s in searches]


def _solve_together(searches: list[Search], run: Run, reporter: Reporter) -> list[FirstPass]:
    """One solver pass over the initial states of every request, split back into one result each."""
    rows = [s.sample_inputs() for s in searches]
    shared = all(len(r) == 1 and torch.equal(r, rows[0]) for r in rows)
    inputs = rows[0] if shared else torch.cat([r.expand(s.n, -1) for r, s in zip(rows, searches, strict=True)])
    result, handover = _solve_one(run, torch.cat([s.x0 for s in searches]), inputs, reporter)
    ends = np.cumsum([s.n for s in searches]).tolist()
    return [
        (result.select(slice(end - s.n, end)), None if handover is None else handover.within(end - s.n, end))
        for s, end in zip(searches, ends, strict=True)
    ]


def _solve_one(run: Run, x0: torch.Tensor, sample_inputs: torch.Tensor, reporter: Reporter) -> FirstPass:
    return solve_in_chunks(
        run.model, x0, sample_inputs, run.dynamics, run.options, reporter, mix_only=run.newton_with_restarts
    )


def solve_in_chunks(
    model: StepModel,
    x0: torch.Tensor,
    sample_inputs: torch.Tensor,
    dynamics: str,
    options: FinderOptions,
    reporter: Reporter,
    *,
    mix_only: bool = False,
) -> FirstPass:
    """Run the chosen solver over chunks of the initial states that fit in memory;
    ``sample_inputs: (1 | n, m)`` is one shared row or one row per state. With ``mix_only``
    (method ``lm``), run only its Anderson warm start and return what it leaves to LM."""
    n, d = x0.shape
    solver = get_solver(options.method)
    size = options.batch_size or auto_chunk_size(
        d,
        sample_inputs.shape[1],
        x0.dtype,
        x0.device,
        options.method,
        gmres_restart=options.newton_krylov.gmres_restart,
    )
    parts, handovers = [], []
    for start in range(0, n, size):
        part = slice(start, start + size)
        if reporter.stopped is not None:
            parts.append(_not_started(x0[part]))
            continue
        inputs = sample_inputs if len(sample_inputs) == 1 else sample_inputs[part]
        problem = Problem(model, inputs, dynamics)
        mixed = mix_before_lm(problem, x0[part], options, progress=reporter.hook("solve")) if mix_only else None
        if mixed is None:
            parts.append(solver(problem, x0[part], options, progress=reporter.hook("solve")))
        else:
            parts.append(mixed[0])
            handovers.append((start, mixed[1]))
        reporter.finish_chunk(int((parts[-1].status == Status.CONVERGED).sum()))
    return SolveResult.concatenate(parts), Handover.concatenate(handovers)


def _not_started(x0: torch.Tensor) -> SolveResult:
    """The outcome of samples the time limit left unsolved: capped at their start, q unknown (NaN)."""
    nan = torch.full((x0.shape[0],), float("nan"), dtype=x0.dtype, device=x0.device)
    zeros = torch.zeros(x0.shape[0], dtype=torch.int64, device=x0.device)
    return SolveResult(
        x=x0.clone(), q=nan, dq=nan.clone(), n_iters=zeros, status=zeros + int(Status.CAPPED), step_norm=nan.clone()
    )


def auto_chunk_size(
    d: int,
    m: int,
    dtype: torch.dtype,
    device: torch.device,
    method: str = "lm",
    *,
    gmres_restart: int = NewtonKrylovOptions().gmres_restart,
) -> int:
    """Initial states per chunk: what one solver iteration fits in a quarter of free memory, and on
    the host about :data:`HOST_CHUNK_BYTES` of working set (:data:`HOST_MIN_CHUNK` at least).

    A dense Newton iteration holds about eight (d, d) matrices per sample (the Jacobian,
    J^T J, its Cholesky factor and the autodiff intermediates) and a few dozen vectors; a
    Newton-Krylov iteration its Krylov basis, cached directions and recorded passes, about
    ``gmres_restart`` + 24 vectors; Adam, Anderson mixing (2 x 6 history vectors) and LM-Krylov (its CGLS
    vectors and recorded passes) a few dozen vectors.
    """
    itemsize = torch.finfo(dtype).bits // 8
    if method == "lm":
        vectors = 8 * d * d + 32 * d
    elif method == "newton_krylov":
        vectors = (gmres_restart + 24) * d
    else:
        vectors = 32 * d
    per_sample = itemsize * (vectors + 4 * m)
    largest = MAX_CHUNK
    if device.type == "cpu" and method not in WHOLE_CHUNK_METHODS:
        largest = min(MAX_CHUNK, max(HOST_MIN_CHUNK, HOST_CHUNK_BYTES // per_sample))
    return int(min(largest, max(1, MEMORY_FRACTION * free_memory(device) // per_sample)))


def free_memory(device: torch.device) -> int:
    """Bytes a chunk may draw on: the device's free memory, or on the host the available memory
    bounded by what this process's ``RLIMIT_DATA`` (the model sandbox's memory limit) leaves."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    return min(available, _data_limit_headroom())


def _data_limit_headroom() -> int:
    """Bytes of private memory this process may still allocate under its ``RLIMIT_DATA`` soft limit
    (the kernel counts ``VmData`` against it); unbounded without a limit."""
    limit = resource.getrlimit(resource.RLIMIT_DATA)[0]
    if limit == resource.RLIM_INFINITY:
        return 2**63 - 1
    with open("/proc/self/status") as status:
        used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmData:"))
    return max(0, limit - used)
