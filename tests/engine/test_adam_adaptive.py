"""The TF reference's Adam controls in fpf's ``adam``: adaptive learning rate, gradient-norm clipping, adam_hps.

Schedules are checked against rates worked out by hand from their rules; the solver against
analytic roots and against the bound clipping puts on Adam's first step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fpf_client.options import AdaptiveGradNormClip, AdaptiveLearningRate, FinderOptions
from workers.engine.models import as_step_model
from workers.engine.solvers import Problem, get_solver
from workers.engine.solvers.strategies.adaptive import GradNormClip, LearningRateSchedule, warmup_rates

torch.set_num_threads(1)
B = torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64)


def _linear(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """F(x) = 0.5 x + b: the one fixed point is 2 b."""
    return 0.5 * x + B


def _solve(x0: np.ndarray, **options: object):
    model = as_step_model(_linear, n_states=3, n_inputs=1).to(torch.device("cpu"), torch.float64)
    problem = Problem(model, torch.zeros(1, 1, dtype=torch.float64))
    return get_solver("adam")(problem, torch.as_tensor(x0), FinderOptions(method="adam", dtype="float64", **options))


def test_rate_rises_after_each_window_of_falling_losses():
    schedule = LearningRateSchedule(AdaptiveLearningRate(min_steps_per_increase=2, min_steps_per_decrease=2), 1.0)
    rates = [schedule.update(loss) for loss in (10, 9, 8, 7, 6, 5)]
    f = 1 / 0.95
    assert rates == pytest.approx([1, 1, f, f, f * f, f * f])


def test_rate_falls_when_the_newest_loss_is_the_worst_of_its_window():
    schedule = LearningRateSchedule(
        AdaptiveLearningRate(min_steps_per_increase=2, min_steps_per_decrease=2, decrease_factor=0.5), 0.8
    )
    rates = [schedule.update(loss) for loss in (1, 2, 3, 2.5, 2.9, 3.5)]
    # step 2: 3 > 1, 2 -> halve; step 3: too soon; step 4: 2.9 < 3 -> no; step 5: 3.5 > all of 2.5, 2.9 -> halve
    assert rates == pytest.approx([0.8, 0.8, 0.4, 0.4, 0.4, 0.2])


def test_disabled_changes_keep_the_rate_and_initial_rate_overrides_lr_init():
    hps = AdaptiveLearningRate(initial_rate=0.3, do_increase_rate=False, do_decrease_rate=False)
    schedule = LearningRateSchedule(hps, 1.0)
    assert [schedule.update(loss) for loss in (5, 4, 3, 2, 1, 9, 9, 9)] == pytest.approx([0.3] * 8)


def test_warmup_rises_to_the_initial_rate():
    assert warmup_rates(1.0, 4, 0.1, "linear") == pytest.approx([0.1, 0.325, 0.55, 0.775])
    assert warmup_rates(1.0, 3, 0.001, "exp") == pytest.approx([0.001, 0.01, 0.1])
    gaussian = warmup_rates(2.0, 10, 0.01, "gaussian")
    assert gaussian[0] == pytest.approx(0.02) and np.all(np.diff(gaussian) > 0) and gaussian[-1] < 2.0
    schedule = LearningRateSchedule(
        AdaptiveLearningRate(n_warmup_steps=4, warmup_shape="linear", warmup_scale=0.1), 1.0
    )
    assert schedule.rate == pytest.approx(0.1)
    assert [schedule.update(1.0) for _ in range(5)] == pytest.approx([0.1, 0.325, 0.55, 0.775, 1.0])


def test_clip_value_is_a_percentile_of_the_recent_norms_capped():
    clip = GradNormClip(AdaptiveGradNormClip(sliding_window_len=3, percentile=50, init_clip_val=7.0))
    assert clip.value == 7.0
    assert [clip.update(n) for n in (1.0, 2.0, 3.0, 40.0)] == pytest.approx([1.0, 1.5, 2.0, 3.0])
    capped = GradNormClip(AdaptiveGradNormClip(percentile=100, max_clip_val=2.5))
    assert capped.update(10.0) == 2.5
    fixed = GradNormClip(AdaptiveGradNormClip(do_adaptive_clipping=False, max_clip_val=0.1))
    assert fixed.value == 0.1 and fixed.update(5.0) == 0.1


def test_the_tf_defaults_reach_the_analytic_root():
    x0 = np.random.default_rng(0).normal(size=(16, 3))
    adam = {"hps": {"epsilon": 0.01}, "alr_hps": {}, "agnc_hps": {}}
    result = _solve(x0, adam=adam, max_iters=20000, tol_q=1e-14)
    assert bool(result.converged.all())
    np.testing.assert_allclose(result.x.numpy(), np.tile(2 * B.numpy(), (16, 1)), atol=1e-6)


def test_clipping_bounds_the_first_step():
    """Adam's first step is lr * g / (|g| + eps) per coordinate, so it moves x by at most lr * |g|_2 / eps
    in norm; clipped at c, by at most lr * c / eps."""
    x0 = np.random.default_rng(1).normal(size=(8, 3)) * 5
    adam = {"lr_init": 1.0, "hps": {"epsilon": 1.0}}
    clip = {"do_adaptive_clipping": False, "max_clip_val": 1e-6}
    clipped = _solve(x0, max_iters=2, adam={**adam, "agnc_hps": clip})
    assert np.linalg.norm(clipped.x.numpy() - x0) <= 1e-6 * (1 + 1e-9)
    free = _solve(x0, max_iters=2, adam=adam)
    assert np.linalg.norm(free.x.numpy() - x0) > 1e-2


def test_adaptive_rate_sets_the_first_step_and_adam_hps_reach_torch():
    """With a tiny epsilon Adam's first step is lr * sign(g) in every coordinate."""
    x0 = np.random.default_rng(2).normal(size=(4, 3)) + 3
    first = _solve(x0, max_iters=2, adam={"alr_hps": {"initial_rate": 0.01}, "hps": {"epsilon": 1e-12}})
    np.testing.assert_allclose(np.abs(first.x.numpy() - x0), 0.01, rtol=1e-6)
    damped = _solve(x0, max_iters=2, adam={"lr_init": 0.01, "hps": {"epsilon": 10.0}})
    assert np.abs(damped.x.numpy() - x0).max() < 0.01 * 0.9  # eps dominates |g|: a shorter step


def test_unknown_controls_are_refused():
    with pytest.raises(ValueError, match="percentil"):
        FinderOptions(adam={"agnc_hps": {"percentil": 90}})
