"""The chosen points as a FixedPoints: their per-sample fields, the linearisation at each
(:func:`..analysis.analyse_points`), the slow points and, when asked, every sample's outcome."""

from __future__ import annotations

import numpy as np
import torch

from fpf_client.fixed_points import FixedPoints

from ..analysis import analyse_points, unique_indices
from .run import Run
from .samples import Samples


def analyse(samples: Samples, run: Run) -> FixedPoints:
    """The representatives ``samples.unique`` with their analysis, slow points and all samples."""
    options, keep = run.options, samples.unique
    labels = samples.labels()
    fps = _points(samples, keep, labels, run)
    lin = analyse_points(
        run.model,
        samples.result.x[keep],
        samples.inputs[keep],
        run.dynamics,
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
        fps.slow_points = _slow_points(samples, labels, run)
    if options.return_all_samples:
        fps.all_samples = _all_samples(samples, labels, run)
    return fps


def _points(samples: Samples, keep: torch.Tensor, labels: np.ndarray, run: Run) -> FixedPoints:
    """The per-sample fields of the samples ``keep``, as numpy; ``labels`` are every sample's cond_id."""
    result = samples.result

    def pick(t: torch.Tensor) -> np.ndarray:
        return t[keep].detach().cpu().numpy()

    u_rows = samples.search.u_rows
    return FixedPoints(
        xstar=pick(result.x).reshape(len(keep), result.x.shape[1]),
        x_init=pick(samples.starts).reshape(len(keep), samples.starts.shape[1]),
        inputs=u_rows[samples.group[keep]].detach().cpu().numpy().reshape(len(keep), u_rows.shape[1]),
        qstar=pick(result.q),
        dq=pick(result.dq),
        n_iters=pick(result.n_iters),
        step_norm=pick(result.step_norm),
        cond_id=labels[keep.cpu().numpy()],
        dynamics=run.dynamics,
        tol_q=run.options.tol_q,
        tol_unique=run.options.tol_unique,
    )


def _slow_points(samples: Samples, labels: np.ndarray, run: Run) -> FixedPoints:
    """Unique unconverged samples with q below ``q_slow``: slow regions, not fixed points."""
    result = samples.result
    slow = torch.nonzero(~result.converged & (result.q < run.options.q_slow)).squeeze(-1)
    keys = torch.cat([result.x[slow], samples.inputs[slow]], dim=1)
    keep = slow[unique_indices(keys, result.q[slow], run.options.tol_unique)]
    return _points(samples, keep, labels, run)


def _all_samples(samples: Samples, labels: np.ndarray, run: Run) -> FixedPoints:
    """Every initial state's outcome, in the order given (the reference's ``all_fps``), with F_xstar."""
    search = samples.search
    every = torch.arange(search.n, device=search.group.device)
    outcome = _points(samples, every, labels, run)
    with torch.no_grad():
        outcome.F_xstar = run.model.step(samples.result.x[every], search.u_rows[search.group]).detach().cpu().numpy()
    return outcome
