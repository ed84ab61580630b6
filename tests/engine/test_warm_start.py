"""Anderson mixing before Newton: what each sample hands on, and that the roots stay the true ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_solvers import Tanh, grid, roll_weights, true_roots

from fpf_client.options import FinderOptions
from workers.engine.solvers import Problem, Status
from workers.engine.solvers.methods.anderson import solve_anderson
from workers.engine.solvers.methods.lm import solve_lm
from workers.engine.solvers.strategies.warm_start import anderson_then


class RecordingNewton:
    """Dense Newton that remembers where it was started (the second phase under test)."""

    def __init__(self) -> None:
        self.starts: torch.Tensor | None = None

    def __call__(self, problem, x0, options, *, progress=None):
        self.starts = x0.clone()
        return solve_lm(problem, x0, options, progress=progress, warm_start=False)


def _roll_problem(n: int) -> tuple[Problem, torch.Tensor]:
    problem = Problem(Tanh(roll_weights(n)), torch.zeros(1, 1, dtype=torch.float64))
    rng = np.random.default_rng(3)
    return problem, torch.as_tensor(rng.uniform(-1.5, 1.5, (64, n)))


@pytest.mark.parametrize("resume_capped", [True, False])
def test_capped_samples_resume_from_their_best_point_only_when_asked(resume_capped):
    problem, x0 = _roll_problem(4)
    mixing = solve_anderson(problem, x0, FinderOptions(), max_iters=3)
    second = RecordingNewton()
    result = anderson_then(second, problem, x0, FinderOptions(), None, mixing_iters=3, resume_capped=resume_capped)

    rest = mixing.status != Status.CONVERGED
    assert rest.any() and (mixing.status[rest] == Status.CAPPED).any()
    resumed = (mixing.status[rest] == Status.CAPPED) & resume_capped
    expected = torch.where(resumed.unsqueeze(-1), mixing.x[rest], x0[rest])
    torch.testing.assert_close(second.starts, expected, rtol=0, atol=0)
    # both phases are counted; samples mixing converged keep its count
    assert (result.n_iters[rest] > mixing.n_iters[rest]).all()
    torch.testing.assert_close(result.n_iters[~rest], mixing.n_iters[~rest])
    assert result.iterations > mixing.iterations


def test_samples_whose_mixing_stalls_restart_from_their_own_start():
    class Ghost(Tanh):  # no root: G = 0.01 + h^2 on the first axis, so mixing cannot converge
        def step(self, h, u):
            return torch.stack([h[:, 0] + 0.01 + h[:, 0] ** 2, 0.5 * h[:, 1]], dim=1)

    problem = Problem(Ghost(np.eye(2)), torch.zeros(1, 1, dtype=torch.float64))
    x0 = torch.tensor([[0.5, 1.0], [-0.4, 0.2]], dtype=torch.float64)
    mixing = solve_anderson(problem, x0, FinderOptions(), max_iters=200)
    assert (mixing.status == Status.STALLED).all()
    second = RecordingNewton()
    anderson_then(second, problem, x0, FinderOptions(), None, mixing_iters=200, resume_capped=True)
    torch.testing.assert_close(second.starts, x0, rtol=0, atol=0)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_warm_started_newton_converges_every_grid_state_onto_a_true_root(n):
    W = roll_weights(n)
    problem = Problem(Tanh(W), torch.zeros(1, 1, dtype=torch.float64))
    result = solve_lm(problem, torch.as_tensor(grid(n)), FinderOptions())
    assert result.converged.all()
    truth = true_roots(W)
    distance = np.abs(result.x.numpy()[:, None, :] - truth[None]).max(-1).min(1)
    assert distance.max() < 1e-5


def test_a_small_iteration_cap_leaves_newton_half_of_it():
    problem, x0 = _roll_problem(4)
    options = FinderOptions(max_iters=6)
    result = solve_lm(problem, x0, options)
    mixing = solve_anderson(problem, x0, options, max_iters=3)
    assert result.iterations <= 6 and result.n_iters.max() <= 6
    # Newton took over after 3 mixing steps: more samples converge than mixing alone reaches in 6 steps
    assert result.converged.sum() > solve_anderson(problem, x0, options, max_iters=6).converged.sum()
    assert (result.n_iters[mixing.status != Status.CONVERGED] > 3).all()
