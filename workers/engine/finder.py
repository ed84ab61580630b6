"""find_fixed_points: the engine's entry point, from arrays and a model to an analysed FixedPoints.

Pipeline: check the arrays, solve in memory-sized chunks with the chosen method, (Newton)
search for missed roots by restarts, continue in float64 the samples that stalled at the
dtype's rounding floor (:mod:`.precision`), keep the converged samples, de-duplicate,
drop distance outliers, optionally rerun q outliers, then linearise and decompose at each
unique point. Unconverged minima of q below ``q_slow`` are returned as ``slow_points``.
With a time limit the search stops where it stands when time is up, and the points found so
far are analysed as a partial result (``info["partial"]``).
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fpf_client.errors import NonFinite, ShapeMismatch
from fpf_client.fixed_points import FixedPoints, reference_unique_indices
from fpf_client.options import FinderOptions

from .analysis import analyse_points, discovery_curve, distance_inliers, q_outliers, unique_indices
from .devices import resolve_device
from .models import StepModel, as_step_model
from .precision import FLOOR_FACTOR, Refinement, at_rounding_floor, refine_in_float64, rounding_floor
from .solvers import Problem, SolveResult, Status, TimeUp, get_solver
from .solvers.methods.newton_krylov import RESTART as KRYLOV_RESTART
from .solvers.strategies.completeness import midpoint_restarts

ProgressCallback = Callable[[dict[str, Any]], None]

#: Fraction of free memory a chunk may use, and the largest chunk (keeps progress flowing).
MEMORY_FRACTION = 0.25
MAX_CHUNK = 65536
#: From this many states on, method="auto" runs ``lm_krylov`` (Anderson mixing, then LM on
#: Jacobian products, dense for the last few samples): from here forming and factoring n dense
#: (d, d) Jacobians per step costs more than the Jacobian products, with the same roots
#: (benchmarks/large_networks.py measures both).
KRYLOV_MIN_STATES = 64
#: Below this many states, method="auto" also restarts between attractors (completeness);
#: the restarts take dense Newton steps.
COMPLETENESS_MAX_STATES = 256
#: Methods whose samples run independently of the rest of their batch (:func:`batchable`).
BATCHABLE_METHODS = frozenset({"lm", "anderson", "newton_krylov"})
#: Minimum seconds between two progress reports within a phase.
REPORT_INTERVAL = 0.2


@dataclass(frozen=True)
class SearchRequest:
    """One search of a batch (:func:`find_fixed_points_batch`): its starting points, inputs and labels.

    Attributes
    ----------
    initial_states : array-like, (n, n_states)
    inputs : array-like, (1 | n, n_inputs), optional
    cond_ids : array-like of int, (n,), optional
        As for :func:`find_fixed_points`.
    """

    initial_states: Any
    inputs: Any = None
    cond_ids: Any = None


def find_fixed_points(
    model: Any,
    initial_states: Any,
    inputs: Any = None,
    options: FinderOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    time_limit_s: float | None = None,
    cond_ids: Any = None,
    **option_overrides: Any,
) -> FixedPoints:
    """Find and analyse the fixed points of ``model`` reachable from ``initial_states``.

    Parameters
    ----------
    model
        Anything :func:`workers.engine.as_step_model` accepts.
    initial_states : array-like, (n, n_states)
        Starting points (numpy or torch; never modified).
    inputs : array-like, (1 | n, n_inputs), optional
        Constant inputs; zeros when None.
    options : FinderOptions, optional
        Defaults to ``FinderOptions()``; ``option_overrides`` replace single fields.
    progress : callable, optional
        Receives ``{"phase", "iteration", "n_total", "n_converged", "q_median", "q_max"}`` at the
        start of each phase and then at most every ``REPORT_INTERVAL`` seconds of solver iterations;
        an exception it raises propagates unchanged, except
        :class:`~workers.engine.solvers.TimeUp` during the search, which ends it like ``time_limit_s``.
    time_limit_s : float, optional
        Seconds the search may take. When they are over, the solvers stop where they are:
        samples meeting ``tol_q`` are fixed points, the rest capped (slow points with ``q_slow``),
        the analysis runs on what was found, and ``info["partial"]`` is True with ``info["partial_reason"]``.
    cond_ids : array-like of int, (n,), optional
        The caller's label of each initial state, reported as ``cond_id`` (a restart between
        attractors takes the label of the first initial state with its input); the index of
        each sample's distinct input row when absent.

    Returns
    -------
    FixedPoints
        Unique fixed points with their analysis; ``info`` holds counts and timings.
    """
    request = SearchRequest(initial_states, inputs, cond_ids)
    return find_fixed_points_batch(
        model, [request], options, progress=progress, time_limit_s=time_limit_s, **option_overrides
    )[0]


def find_fixed_points_batch(
    model: Any,
    requests: Sequence[SearchRequest],
    options: FinderOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    time_limit_s: float | None = None,
    **option_overrides: Any,
) -> list[FixedPoints]:
    """Several searches on one model with one set of options, the solver run once for all of them.

    The initial states of every request are solved in one pass (chunked to fit memory, as in
    :func:`find_fixed_points`); everything after the solve (de-duplication, restarts, float64
    refinement, outliers, analysis, ``all_samples``, the discovery curve) runs per request, so each
    result equals ``find_fixed_points(model, r.initial_states, r.inputs, options, cond_ids=r.cond_ids)``:
    the same points, counts and ``info`` keys. Only ``info["iterations"]`` (the shared solver loop's)
    and the timings describe the batch. Methods whose samples are not independent of their batch
    (:func:`batchable` is False: ``adam`` minimises the mean q, ``lm_krylov`` switches the last
    samples of a batch to dense steps) solve the requests one after the other instead, which keeps
    the results equal.

    Parameters
    ----------
    model
        Anything :func:`workers.engine.as_step_model` accepts.
    requests : sequence of SearchRequest
        The searches; each its own initial states, inputs and cond_ids.
    options, option_overrides
        As for :func:`find_fixed_points`, shared by every request.
    progress : callable, optional
        Batch-level reports (``n_total`` counts the initial states of every request).
    time_limit_s : float, optional
        Seconds the whole batch may take; the requests unfinished then are partial results.

    Returns
    -------
    list of FixedPoints
        One per request, in order.
    """
    started = time.perf_counter()
    options = FinderOptions.model_validate({**(options or FinderOptions()).model_dump(), **option_overrides})
    device = resolve_device(options.device)
    dtype = getattr(torch, options.dtype)
    step_model = as_step_model(model).to(device, dtype)
    dynamics = options.dynamics or step_model.dynamics
    searches = [_prepare(request, step_model, dtype, device) for request in requests]
    d = step_model.n_states
    restarts_wanted = wants_restarts(options, d)
    together = batchable(options, d)
    options = options.model_copy(update={"method": resolve_method(options.method, d)})
    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    reporter = _Reporter(progress, sum(search.n for search in searches), deadline)
    if together and len(searches) > 1:
        results = _solve_together(step_model, searches, dynamics, options, reporter)
    else:
        results = [_solve_in_chunks(step_model, s.x0, s.sample_inputs(), dynamics, options, reporter) for s in searches]
    context = _Context(step_model, dynamics, options, reporter, device, started, restarts_wanted)
    return [_finish(search, result, context) for search, result in zip(searches, results, strict=True)]


def batchable(options: FinderOptions, n_states: int | None = None) -> bool:
    """Whether requests with these options can share one solver pass with results equal to separate
    searches: true for methods whose samples run independently of the rest of their batch (per-sample
    damping, histories and stop tests: ``lm``, ``anderson``, ``newton_krylov``); false for ``adam``
    (one learning rate for the mean q) and ``lm_krylov`` (dense steps for the last samples of a
    batch, a random probe per row). ``auto`` needs ``n_states`` to know which method it runs."""
    if options.method == "auto" and n_states is None:
        return False
    return resolve_method(options.method, n_states or 0) in BATCHABLE_METHODS


@dataclass(frozen=True)
class _Search:
    """A request's checked arrays on the solver's device and dtype."""

    x0: torch.Tensor
    u_rows: torch.Tensor  #: distinct input rows (conditions)
    group: torch.Tensor  #: each sample's condition index
    cond_ids: np.ndarray | None

    @property
    def n(self) -> int:
        return self.x0.shape[0]

    def sample_inputs(self) -> torch.Tensor:
        """Inputs as the solver takes them: the shared row, or one row per sample."""
        return self.u_rows if len(self.u_rows) == 1 else self.u_rows[self.group]


@dataclass(frozen=True)
class _Context:
    """What every request of a batch shares after the solve."""

    model: StepModel
    dynamics: str
    options: FinderOptions
    reporter: _Reporter
    device: torch.device
    started: float
    restarts_wanted: bool


def _prepare(request: SearchRequest, model: StepModel, dtype: torch.dtype, device: torch.device) -> _Search:
    """Check a request's arrays against the model and each other."""
    x0 = _as_tensor(request.initial_states, "initial_states", dtype, device)
    n, _ = _check_states(x0, model)
    u = _check_inputs(request.inputs, n, model, dtype, device)
    u_rows, group = _conditions(u, n)
    return _Search(x0, u_rows, group, _check_cond_ids(request.cond_ids, n))


def _solve_together(
    model: StepModel, searches: list[_Search], dynamics: str, options: FinderOptions, reporter: _Reporter
) -> list[SolveResult]:
    """One solver pass over the initial states of every request, split back into one result each."""
    rows = [s.sample_inputs() for s in searches]
    shared = all(len(r) == 1 for r in rows) and all(torch.equal(r, rows[0]) for r in rows)
    inputs = rows[0] if shared else torch.cat([r.expand(s.n, -1) for r, s in zip(rows, searches, strict=True)])
    x0 = torch.cat([s.x0 for s in searches])
    result = _solve_in_chunks(model, x0, inputs, dynamics, options, reporter)
    ends = np.cumsum([s.n for s in searches]).tolist()
    return [result.select(slice(end - s.n, end)) for s, end in zip(searches, ends, strict=True)]


def _finish(search: _Search, result: SolveResult, context: _Context) -> FixedPoints:
    """Everything after the solve, for one request: unique roots, restarts, refinement, analysis."""
    step_model, dynamics, options, reporter = context.model, context.dynamics, context.options, context.reporter
    x0, u_rows, group, n = search.x0, search.u_rows, search.group, search.n
    unique = _unique_converged(result, u_rows[group], options)
    starts, sample_group = x0, group
    completeness_passes = 0
    if context.restarts_wanted and reporter.stopped is None:
        restarts = midpoint_restarts(
            Problem(step_model, u_rows, dynamics),
            result.x[unique],
            group[unique],
            options,
            torch.Generator().manual_seed(options.random_seed),
            progress=reporter.hook("completeness", n),
        )
        starts = torch.cat([x0, restarts.starts])
        sample_group = torch.cat([group, restarts.group])
        result = SolveResult.concatenate([result, restarts.result])
        completeness_passes = restarts.passes
        # The first pass's representatives stand for all its converged samples.
        candidates = torch.cat([unique, n + torch.nonzero(restarts.result.converged).squeeze(-1)])
        unique = _unique_among(result, candidates, u_rows, sample_group, options)

    refinement = Refinement()
    if wants_refinement(options) and reporter.stopped is None:
        refinement = refine_in_float64(
            step_model, result, u_rows[sample_group], dynamics, options, progress=reporter.hook("refinement", n)
        )
        if len(refinement.converged):
            candidates = torch.cat([unique, refinement.converged])
            unique = _unique_among(result, candidates, u_rows, sample_group, options)

    roots_found = unique[result.converged[unique]]  # the reference rule also keeps unconverged samples, as they are
    if len(roots_found):
        _polish(Problem(step_model, u_rows[sample_group[roots_found]], dynamics), result, roots_found)
        unique = _unique_among(result, unique, u_rows, sample_group, options)

    labels = _labels(search.cond_ids, group, sample_group)
    fps = _analyse(step_model, result, unique, starts, u_rows, sample_group, labels, dynamics, options, reporter)
    if options.return_all_samples:
        fps.all_samples = _all_samples(step_model, result, x0, u_rows, group, labels, dynamics, options)
    fps.info["discovery_curve"] = _discovery_curve(fps, result, u_rows, group, options)
    first_pass = result.select(slice(0, n))
    at_floor = at_rounding_floor(first_pass)
    advice = _precision_warning(first_pass, at_floor, refinement, options)
    fps.info.update(
        n_fixed_points=fps.n,
        n_certified=int(fps.certified.sum()) if fps.certified is not None else None,
        n_samples=n,
        n_converged=int((result.status[:n] == Status.CONVERGED).sum()),
        n_stalled=int((result.status[:n] == Status.STALLED).sum()),
        n_capped=int((result.status[:n] == Status.CAPPED).sum()),
        n_stalled_at_rounding_floor=int(at_floor.sum()),
        n_refined_in_float64=len(refinement.converged),
        warnings=[advice] if advice else [],
        n_restarts=len(result.q) - n,
        n_restarts_converged=int((result.status[n:] == Status.CONVERGED).sum()),
        completeness_passes=completeness_passes,
        method=options.method,
        partial=reporter.stopped is not None,
        partial_reason=reporter.stopped,
        iterations=int(result.iterations),
        device=str(context.device),
        dtype=options.dtype,
        wall_time_s=time.perf_counter() - context.started,
    )
    return fps


def _precision_warning(
    first_pass: SolveResult, at_floor: torch.Tensor, refinement: Refinement, options: FinderOptions
) -> str | None:
    """Advice when samples (``at_floor``) stalled at the dtype's rounding floor (:mod:`.precision`)
    and float64 refinement could not certify every distinct point among them."""
    count = int(at_floor.sum())
    unresolved = refinement.n_tried - len(refinement.converged)
    if count == 0 or (first_pass.x.dtype != torch.float64 and unresolved == 0):
        return None
    typical = float(rounding_floor(first_pass.x[at_floor]).median())
    if refinement.unavailable:
        refined = f" They could not be refined in float64: {refinement.unavailable}."
    elif refinement.stopped:
        refined = (
            f" The time limit ended their refinement in float64 with {len(refinement.converged)} of the "
            f"{refinement.n_tried} distinct points among them certified."
        )
    elif refinement.n_tried:
        refined = (
            f" {unresolved} of the {refinement.n_tried} distinct points among them did not converge in float64 either."
        )
    else:
        refined = ""
    return (
        f"{count} samples stalled with q within {FLOOR_FACTOR:g}x of the smallest q that {options.dtype} "
        f"resolves at their points (~{typical:.0e}, above tol_q = {options.tol_q:g}): they are probably "
        f"fixed points this dtype cannot bring below tol_q.{refined} Run with dtype='float64', or with tol_q "
        f"of about {10 * typical:.0e} or more."
    )


def resolve_method(method: str, n_states: int) -> str:
    """The solver that runs: ``auto`` is dense ``lm`` for small networks and matrix-free ``lm_krylov``
    from KRYLOV_MIN_STATES states on."""
    if method != "auto":
        return method
    return "lm_krylov" if n_states >= KRYLOV_MIN_STATES else "lm"


def wants_restarts(options: FinderOptions, n_states: int) -> bool:
    """Whether the midpoint restarts run: asked for, or ``auto`` with ``method="auto"`` below
    COMPLETENESS_MAX_STATES states (above, each restart costs a full matrix-free search)."""
    if options.completeness == "auto":
        return options.method == "auto" and n_states < COMPLETENESS_MAX_STATES
    return options.completeness == "midpoints"


def wants_refinement(options: FinderOptions) -> bool:
    """Whether float64 refinement runs: asked for, or ``auto`` for every method but adam, which keeps
    the reference's behaviour."""
    if options.refinement == "auto":
        return options.method != "adam"
    return options.refinement == "float64"


def _solve_in_chunks(
    model: StepModel,
    x0: torch.Tensor,
    sample_inputs: torch.Tensor,
    dynamics: str,
    options: FinderOptions,
    reporter: _Reporter,
) -> SolveResult:
    """Run the chosen solver over chunks of the initial states that fit in memory;
    ``sample_inputs: (1 | n, m)`` is one shared row or one row per state."""
    n, d = x0.shape
    solver = get_solver(options.method)
    size = options.batch_size or auto_chunk_size(d, sample_inputs.shape[1], x0.dtype, x0.device, options.method)
    parts = []
    for start in range(0, n, size):
        part = slice(start, start + size)
        if reporter.stopped is not None:
            parts.append(_not_started(x0[part]))
            continue
        inputs = sample_inputs if len(sample_inputs) == 1 else sample_inputs[part]
        problem = Problem(model, inputs, dynamics)
        parts.append(solver(problem, x0[part], options, progress=reporter.hook("solve", start)))
        reporter.finish_chunk(int((parts[-1].status == Status.CONVERGED).sum()))
    return SolveResult.concatenate(parts)


def _not_started(x0: torch.Tensor) -> SolveResult:
    """The outcome of samples the time limit left unsolved: capped at their start, q unknown (NaN)."""
    nan = torch.full((x0.shape[0],), float("nan"), dtype=x0.dtype, device=x0.device)
    zeros = torch.zeros(x0.shape[0], dtype=torch.int64, device=x0.device)
    return SolveResult(
        x=x0.clone(), q=nan, dq=nan.clone(), n_iters=zeros, status=zeros + int(Status.CAPPED), step_norm=nan.clone()
    )


def auto_chunk_size(d: int, m: int, dtype: torch.dtype, device: torch.device, method: str = "lm") -> int:
    """Initial states per chunk: what one solver iteration fits in a quarter of free memory.

    A dense Newton iteration holds about eight (d, d) matrices per sample (the Jacobian,
    J^T J, its Cholesky factor and the autodiff intermediates) and a few dozen vectors; a
    Newton-Krylov iteration its Krylov basis, cached directions and recorded passes, about
    RESTART + 24 vectors; Adam, Anderson mixing (2 x 6 history vectors) and LM-Krylov (its CGLS
    vectors and recorded passes) a few dozen vectors.
    """
    itemsize = torch.finfo(dtype).bits // 8
    if method == "lm":
        vectors = 8 * d * d + 32 * d
    elif method == "newton_krylov":
        vectors = (KRYLOV_RESTART + 24) * d
    else:
        vectors = 32 * d
    per_sample = itemsize * (vectors + 4 * m)
    return int(min(MAX_CHUNK, max(1, MEMORY_FRACTION * _free_memory(device) // per_sample)))


def _free_memory(device: torch.device) -> int:
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


def _analyse(
    model: StepModel,
    result: SolveResult,
    keep: torch.Tensor,
    starts: torch.Tensor,
    u_rows: torch.Tensor,
    group: torch.Tensor,
    labels: np.ndarray,
    dynamics: str,
    options: FinderOptions,
    reporter: _Reporter,
) -> FixedPoints:
    """Outlier handling and linearisation of the unique converged samples ``keep``, as a FixedPoints."""
    reporter.announce("analysis", result.iterations, result.q, int(result.converged.sum()))
    initial = starts[: len(group)].detach().cpu().double().numpy()
    if options.do_exclude_distance_outliers and len(keep):
        inliers = distance_inliers(result.x[keep].cpu().double().numpy(), initial, options.outlier_distance_scale)
        keep = keep[torch.as_tensor(inliers, device=keep.device)]
    if options.do_rerun_q_outliers and len(keep):
        keep = _rerun_q_outliers(model, result, keep, u_rows, group, dynamics, options)
    if options.max_n_unique is not None and len(keep) > options.max_n_unique:
        rng = np.random.default_rng(options.random_seed)
        chosen = np.sort(rng.choice(len(keep), options.max_n_unique, replace=False))
        keep = keep[torch.as_tensor(chosen, device=keep.device)]
    fps = _points(result, starts, u_rows, group, keep, labels, dynamics, options)
    lin = analyse_points(
        model,
        result.x[keep],
        u_rows[group[keep]],
        dynamics,
        tol_nonisolated=options.tol_nonisolated,
        tol_step=0.1 * options.tol_unique,
        with_input_jacobians=options.do_compute_input_jacobians,
        n_eigs=options.n_eigs,
    )
    fps.F_xstar, fps.step_norm = lin.F_xstar, lin.step_norm
    fps.certified, fps.is_nonisolated = lin.certified, lin.is_nonisolated
    if options.do_compute_jacobians:
        fps.J_xstar = lin.J_xstar
        fps.dFdu = lin.dFdu if options.do_compute_input_jacobians else None
    if options.do_decompose_jacobians:
        fps.eigval_J_xstar, fps.eigvec_J_xstar = lin.eigval, lin.eigvec
        fps.is_stable, fps.n_unstable = lin.is_stable, lin.n_unstable
    if options.q_slow is not None:
        fps.slow_points = _slow_points(result, starts, u_rows, group, labels, dynamics, options)
    return fps


def _discovery_curve(
    fps: FixedPoints, result: SolveResult, u_rows: torch.Tensor, group: torch.Tensor, options: FinderOptions
) -> dict[str, list[int]]:
    """Distinct certified roots reached from the first N initial states, for growing N."""
    n = len(group)
    converged = torch.nonzero(result.converged[:n]).squeeze(-1)
    samples = torch.cat([result.x[converged], u_rows[group[converged]]], dim=1).cpu().double().numpy()
    points = np.concatenate([fps.xstar, fps.inputs], axis=1).astype(np.float64) if fps.n else samples[:0]
    certified = fps.certified if fps.certified is not None else np.ones(fps.n, dtype=bool)
    return discovery_curve(converged.cpu().numpy(), samples, points, certified, n, options.tol_unique)


def _polish(roots: Problem, result: SolveResult, keep: torch.Tensor) -> None:
    """One undamped Newton step from each unique root ``keep``, kept where it lowers q (in place).

    Solvers stop as soon as q < tol_q, which leaves an error of about sqrt(2 tol_q) / |dG/dx|
    that depends on where a sample started; near an isolated root a plain Newton step roughly
    squares it. The points reported are then as accurate as the dtype allows, and copies of one
    root that stopped at different distances merge in the uniqueness test that follows.
    """
    x = result.x[keep]
    g = roots.residual(x)
    step = torch.linalg.lstsq(roots.jacobian(x), -g.unsqueeze(-1)).solution.squeeze(-1)
    g_try = roots.residual(x + step)
    q_try = 0.5 * (g_try * g_try).sum(-1)
    better = torch.isfinite(q_try) & (q_try < result.q[keep])
    result.x[keep[better]] = x[better] + step[better]
    result.q[keep[better]] = q_try[better]


def _unique_converged(result: SolveResult, inputs: torch.Tensor, options: FinderOptions) -> torch.Tensor:
    """Indices of one representative per distinct root (and input), by ``options.unique_rule``:
    converged samples in max-norm, or (``"reference"``) every sample with a finite q, grouped
    the reference's way in 2-norm."""
    if options.unique_rule == "reference":
        candidates = torch.nonzero(torch.isfinite(result.q)).squeeze(-1)
        keys = torch.cat([result.x[candidates], inputs[candidates]], dim=1).detach().cpu().double().numpy()
        kept = reference_unique_indices(keys, result.q[candidates].detach().cpu().double().numpy(), options.tol_unique)
        return candidates[torch.as_tensor(kept, device=candidates.device)]
    converged = torch.nonzero(result.converged).squeeze(-1)
    keys = torch.cat([result.x[converged], inputs[converged]], dim=1)
    return converged[unique_indices(keys, result.q[converged], options.tol_unique)]


def _unique_among(
    result: SolveResult, candidates: torch.Tensor, u_rows: torch.Tensor, group: torch.Tensor, options: FinderOptions
) -> torch.Tensor:
    """The samples among ``candidates`` (indices) that represent distinct roots."""
    return candidates[_unique_converged(result.select(candidates), u_rows[group[candidates]], options)]


def _rerun_q_outliers(
    model: StepModel,
    result: SolveResult,
    keep: torch.Tensor,
    u_rows: torch.Tensor,
    group: torch.Tensor,
    dynamics: str,
    options: FinderOptions,
) -> torch.Tensor:
    """Polish points whose q is far above the median from where they stopped; keep what improved."""
    outliers = keep[
        torch.as_tensor(q_outliers(result.q[keep].cpu().numpy(), options.outlier_q_scale), device=keep.device)
    ]
    if len(outliers) == 0:
        return keep
    problem = Problem(model, u_rows[group[outliers]], dynamics)
    rerun = get_solver(options.method)(problem, result.x[outliers], options)
    better = rerun.q < result.q[outliers]
    result.update(outliers[better], rerun.select(better))
    return keep[_unique_converged(result.select(keep), u_rows[group[keep]], options)]


def _points(
    result: SolveResult,
    starts: torch.Tensor,
    u_rows: torch.Tensor,
    group: torch.Tensor,
    keep: torch.Tensor,
    labels: np.ndarray,
    dynamics: str,
    options: FinderOptions,
) -> FixedPoints:
    """The per-sample fields of the samples ``keep``, as numpy; ``labels`` are every sample's cond_id."""

    def pick(t: torch.Tensor) -> np.ndarray:
        return t[keep].detach().cpu().numpy()

    return FixedPoints(
        xstar=pick(result.x).reshape(len(keep), result.x.shape[1]),
        x_init=pick(starts).reshape(len(keep), starts.shape[1]),
        inputs=u_rows[group[keep]].detach().cpu().numpy().reshape(len(keep), u_rows.shape[1]),
        qstar=pick(result.q),
        dq=pick(result.dq),
        n_iters=pick(result.n_iters),
        step_norm=pick(result.step_norm),
        cond_id=labels[keep.cpu().numpy()],
        dynamics=dynamics,
        tol_q=options.tol_q,
        tol_unique=options.tol_unique,
    )


def _slow_points(
    result: SolveResult,
    starts: torch.Tensor,
    u_rows: torch.Tensor,
    group: torch.Tensor,
    labels: np.ndarray,
    dynamics: str,
    options: FinderOptions,
) -> FixedPoints:
    """Unique unconverged samples with q below ``q_slow``: slow regions, not fixed points."""
    slow = torch.nonzero(~result.converged & (result.q < options.q_slow)).squeeze(-1)
    keys = torch.cat([result.x[slow], u_rows[group[slow]]], dim=1)
    keep = slow[unique_indices(keys, result.q[slow], options.tol_unique)]
    return _points(result, starts, u_rows, group, keep, labels, dynamics, options)


def _all_samples(
    model: StepModel,
    result: SolveResult,
    x0: torch.Tensor,
    u_rows: torch.Tensor,
    group: torch.Tensor,
    labels: np.ndarray,
    dynamics: str,
    options: FinderOptions,
) -> FixedPoints:
    """Every initial state's outcome, in the order given (the reference's ``all_fps``), with F_xstar."""
    every = torch.arange(len(group), device=group.device)
    samples = _points(result, x0, u_rows, group, every, labels, dynamics, options)
    with torch.no_grad():
        samples.F_xstar = model.step(result.x[every], u_rows[group]).detach().cpu().numpy()
    return samples


class _Reporter:
    """Turns solver hooks into the progress dicts of the public callback, throttled in time."""

    def __init__(self, callback: ProgressCallback | None, n_total: int, deadline: float | None = None) -> None:
        self.callback = callback
        self.n_total = n_total
        self.deadline = deadline
        self.n_converged_before = 0
        self.last = float("-inf")
        #: Why the search was stopped early (the time limit), or None.
        self.stopped: str | None = None

    def hook(self, phase: str, offset: int):
        """A solver progress hook for ``phase``; ``offset`` samples were finished before it.

        It raises :class:`TimeUp` once the deadline has passed (or the callback raised it),
        and remembers why in :attr:`stopped`.
        """
        if self.callback is None and self.deadline is None:
            return None

        def report(iteration: int, q: torch.Tensor, n_converged: int) -> None:
            try:
                if self.stopped is not None:
                    raise TimeUp(self.stopped)
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    raise TimeUp(f"the time limit ran out during the {phase} phase, at iteration {iteration}")
                self.report(phase, iteration, q, self.n_converged_before + n_converged)
            except TimeUp as stop:
                self.stopped = str(stop) or f"stopped by the progress callback during the {phase} phase"
                raise

        return report

    def finish_chunk(self, n_converged: int) -> None:
        self.n_converged_before += n_converged

    def announce(self, phase: str, iteration: int, q: torch.Tensor, n_converged: int) -> None:
        """Report the start of a phase that runs to its end: a TimeUp of the callback is ignored here."""
        with contextlib.suppress(TimeUp):
            self.report(phase, iteration, q, n_converged, force=True)

    def report(self, phase: str, iteration: int, q: torch.Tensor, n_converged: int, force: bool = False) -> None:
        now = time.perf_counter()
        if self.callback is None or (not force and now - self.last < REPORT_INTERVAL):
            return
        self.last = now
        finite = q[torch.isfinite(q)]
        self.callback(
            {
                "phase": phase,
                "iteration": int(iteration),
                "n_total": self.n_total,
                "n_converged": int(n_converged),
                "q_median": float(finite.median()) if finite.numel() else float("nan"),
                "q_max": float(finite.max()) if finite.numel() else float("nan"),
            }
        )


def _as_tensor(array: Any, name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A fresh tensor (never a view of the caller's memory), checked to be finite."""
    tensor = torch.as_tensor(np.asarray(array.detach().cpu() if isinstance(array, torch.Tensor) else array))
    tensor = tensor.to(device=device, dtype=dtype, copy=True)
    if not torch.isfinite(tensor).all():
        raise NonFinite(f"{name} contains NaN or infinite values", field=name)
    return tensor


def _check_states(x0: torch.Tensor, model: StepModel) -> tuple[int, int]:
    if x0.ndim != 2 or x0.shape[1] != model.n_states or x0.shape[0] == 0:
        raise ShapeMismatch(
            f"initial_states has shape {tuple(x0.shape)}; expected (n, {model.n_states}) with n >= 1",
            field="initial_states",
        )
    return x0.shape[0], x0.shape[1]


def _check_inputs(inputs: Any, n: int, model: StepModel, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if inputs is None:
        return torch.zeros(1, model.n_inputs, dtype=dtype, device=device)
    u = _as_tensor(inputs, "inputs", dtype, device)
    if u.ndim != 2 or u.shape[1] != model.n_inputs or u.shape[0] not in (1, n):
        raise ShapeMismatch(f"inputs has shape {tuple(u.shape)}; expected (1 or {n}, {model.n_inputs})", field="inputs")
    return u


def _check_cond_ids(cond_ids: Any, n: int) -> np.ndarray | None:
    """The caller's per-sample labels as a flat array of n entries, or None."""
    if cond_ids is None:
        return None
    labels = np.asarray(cond_ids.detach().cpu() if isinstance(cond_ids, torch.Tensor) else cond_ids).reshape(-1)
    if labels.shape[0] != n:
        raise ShapeMismatch(
            f"cond_ids has {labels.shape[0]} entries; expected one per initial state ({n})", field="cond_ids"
        )
    return labels


def _labels(cond_ids: np.ndarray | None, group: torch.Tensor, sample_group: torch.Tensor) -> np.ndarray:
    """Every sample's cond_id: the caller's label (restarts: that of the first initial state with
    their input), or the sample's input condition."""
    if cond_ids is None:
        return sample_group.cpu().numpy()
    labels = cond_ids
    first: dict[int, int] = {}
    for index, g in enumerate(group.cpu().numpy().tolist()):
        first.setdefault(g, index)
    restarts = sample_group[len(group) :].cpu().numpy()
    return np.concatenate([labels, labels[[first[g] for g in restarts.tolist()]]]) if len(restarts) else labels


def _conditions(u: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct input rows (the input conditions) and each sample's condition index."""
    if len(u) == 1:
        return u, torch.zeros(n, dtype=torch.int64, device=u.device)
    rows, group = torch.unique(u, dim=0, return_inverse=True)
    return rows, group
