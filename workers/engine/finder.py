"""find_fixed_points: the engine's entry point, from arrays and a model to an analysed FixedPoints.

A search is a short pipeline of named stages, each a module of :mod:`.pipeline`: settle the run
(options, device, method), check each request's arrays, solve them in memory-sized chunks, keep
one sample per distinct root, restart between attractors for the roots missed, refine in
float64 the samples that stalled at the dtype's rounding floor, polish each root by a Newton
step, screen outliers, linearise and decompose at each point, and record the search
(:class:`~.pipeline.info.SearchInfo`, the result's ``info``). With a time limit the search
stops where it stands when time is up, and the points found so far are analysed as a partial
result (``info["partial"]``). :func:`find_fixed_points_batch` runs the same stages for several
requests on one model, with one solver pass for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fpf_client.fixed_points import FixedPoints
from fpf_client.options import FinderOptions

from .pipeline.assembly import analyse
from .pipeline.chunking import FirstPass, auto_chunk_size, solve
from .pipeline.chunking import free_memory as _free_memory  # re-exported: tests of the memory bounds use it
from .pipeline.completion import complete, refine
from .pipeline.info import record
from .pipeline.inputs import Search, SearchRequest, prepare
from .pipeline.reporting import ProgressCallback, Reporter
from .pipeline.run import Run, batchable, start_run
from .pipeline.selection import polish, screen, select_unique


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
        start of each phase and then at most every :data:`.pipeline.reporting.REPORT_INTERVAL`
        seconds of solver iterations; an exception it raises propagates unchanged, except
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
    run = start_run(model, options, option_overrides)
    searches = [prepare(request, run.model, run.dtype, run.device) for request in requests]
    reporter = Reporter(progress, sum(search.n for search in searches), time_limit_s)
    first_passes = solve(searches, run, reporter)
    return [_after_the_solve(s, first, run, reporter) for s, first in zip(searches, first_passes, strict=True)]


def _after_the_solve(search: Search, first: FirstPass, run: Run, reporter: Reporter) -> FixedPoints:
    """One request's stages after the solve, from its solver outcome to its analysed points."""
    result, unfinished = first
    samples = select_unique(search, result, run.options, unfinished)
    samples = complete(samples, run, reporter)
    samples = refine(samples, run, reporter)
    samples = polish(samples, run)
    reporter.announce("analysis", samples.result)
    samples = screen(samples, run)
    fps = analyse(samples, run)
    fps.info = record(samples, fps, run, reporter).as_dict()
    return fps


__all__ = [
    "ProgressCallback",
    "SearchRequest",
    "_free_memory",
    "auto_chunk_size",
    "batchable",
    "find_fixed_points",
    "find_fixed_points_batch",
]
