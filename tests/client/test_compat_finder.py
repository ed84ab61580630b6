"""fpf_client.compat.FixedPointFinder in-process: the reference's API on the shipped flip-flop network.

Ground truth is independent of both tools: every reported point is a root of the float64 map,
its stability comes from float64 Jacobians, and the 3-bit flip-flop has 2^3 = 8 memories.
The reference's own Adam (method='joint') and fpf's default solver must agree on the points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from examples.flipflop.networks import run_steps
from examples.flipflop.task import FlipFlopTask
from fpf_client.compat import FixedPointFinder
from fpf_client.compat.hps import REFERENCE_DEFAULTS
from fpf_client.errors import InvalidOptions

pytestmark = pytest.mark.slow  # flip-flop searches: tens of seconds on a busy machine
DATA = Path(__file__).resolve().parents[1] / "data"
torch.set_num_threads(1)
HPS = {"max_iters": 10000, "lr_init": 1.0, "outlier_distance_scale": 10.0, "verbose": True, "super_verbose": True}


def _as_rnn(cell: torch.nn.Module) -> torch.nn.RNN:
    """The shipped tanh cell as the nn.RNN (batch_first) the reference's example hands its finder."""
    rnn = torch.nn.RNN(3, 16, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(rnn, f"{name}_l0").copy_(getattr(cell, name))
    return rnn


@pytest.fixture(scope="module")
def flipflop() -> tuple[torch.nn.RNN, np.ndarray]:
    cell = torch.jit.load(str(DATA / "flipflop_tanh.pt"))
    inputs, _ = FlipFlopTask().sample(64, torch.Generator().manual_seed(11))
    with torch.no_grad():
        trajectories = run_steps(cell, inputs, torch.zeros(64, 16)).numpy()
    return _as_rnn(cell), trajectories


def _float64_map(rnn: torch.nn.RNN):
    double = torch.nn.RNN(3, 16, batch_first=True).double()
    double.load_state_dict({k: v.double() for k, v in rnn.state_dict().items()})

    def step(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            h = torch.as_tensor(x, dtype=torch.float64)
            return double(torch.zeros(len(h), 1, 3, dtype=torch.float64), h[None])[1][0].numpy()

    def jacobian(x: np.ndarray) -> np.ndarray:
        f = lambda h: double(torch.zeros(1, 1, 3, dtype=torch.float64), h[None, None])[1][0, 0]  # noqa: E731
        return torch.autograd.functional.jacobian(f, torch.as_tensor(x, dtype=torch.float64)).numpy()

    return step, jacobian


@pytest.fixture(scope="module")
def searches(flipflop) -> dict[str, tuple]:
    rnn, trajectories = flipflop
    out = {}
    for name, method in (("default", {}), ("joint", {"method": "joint"})):
        fpf = FixedPointFinder(rnn, **HPS, **method)
        initial_states = fpf.sample_states(trajectories, n_inits=512, noise_scale=0.5)
        out[name] = (fpf, initial_states, *fpf.find_fixed_points(initial_states, np.zeros([1, 3])))
    return out


def test_the_points_are_float64_roots_with_eight_stable_memories(flipflop, searches):
    rnn, _ = flipflop
    step, jacobian = _float64_map(rnn)
    for name, (_, _, unique, _) in searches.items():
        x = unique.xstar.astype(np.float64)
        residual = np.linalg.norm(step(x) - x, axis=1)
        assert residual.max() < 1e-5, name
        stable = np.array([np.abs(np.linalg.eigvals(jacobian(p))).max() < 1 for p in x])
        assert stable.sum() == 8, name
        np.testing.assert_array_equal(unique.is_stable, stable)


def test_fpf_solver_and_the_reference_adam_agree(searches):
    default, joint = searches["default"][2], searches["joint"][2]
    assert default.info["method"] == "lm" and joint.info["method"] == "adam"
    assert default.n == joint.n and default.is_stable.sum() == joint.is_stable.sum()
    distance = np.linalg.norm(default.xstar[:, None] - joint.xstar[None], axis=2)
    assert distance.min(axis=1).max() < 1e-5 and distance.min(axis=0).max() < 1e-5


def test_all_fps_has_one_row_per_initial_state(searches):
    _, initial_states, unique, all_fps = searches["default"]
    assert all_fps.n == len(initial_states)
    np.testing.assert_allclose(all_fps.x_init, initial_states, rtol=1e-6)
    for name in ("xstar", "F_xstar", "qstar", "dq", "n_iters"):
        assert getattr(all_fps, name).shape[0] == len(initial_states)
    assert all_fps.cond_id is None and unique.cond_id is None
    assert unique.certified is not None and unique.n_unstable is not None and unique.is_nonisolated is not None


def test_joint_unique_points_are_the_lowest_q_members_of_all_fps(searches):
    """Without fpf's restarts between attractors (Adam), every unique point comes from an initial state."""
    _, _, unique, all_fps = searches["joint"]
    for point in unique:
        members = all_fps.find(point)
        assert len(members) and point.qstar[0] <= all_fps.qstar[members].min()


def test_progress_prints_as_the_reference_does(flipflop, capsys):
    rnn, trajectories = flipflop
    fpf = FixedPointFinder(rnn, method="joint", max_iters=200, super_verbose=True, n_iters_per_print_update=1)
    fpf.find_fixed_points(fpf.sample_states(trajectories, 64, noise_scale=0.5), np.zeros([1, 3]))
    out = capsys.readouterr().out
    assert "Searching for fixed points from 64 initial states." in out
    assert "joint Adam" in out and "\tIter: " in out and "Identified" in out
    quiet = FixedPointFinder(rnn, verbose=False)
    quiet.find_fixed_points(trajectories[:4, 5], np.zeros([1, 3]))
    assert capsys.readouterr().out == ""


def test_sequential_runs_each_state_alone_with_cond_ids(flipflop):
    rnn, trajectories = flipflop
    fpf = FixedPointFinder(rnn, method="sequential", verbose=False, max_iters=3000)
    inputs, states = fpf.sample_inputs_and_states(
        np.zeros((*trajectories.shape[:2], 3)), trajectories, 6, noise_scale=0.1
    )
    assert inputs.shape == (6, 3) and states.shape == (6, 16)
    labels = np.array([4, 4, 9, 9, 2, 2])
    unique, all_fps = fpf.find_fixed_points(states, inputs, cond_ids=labels)
    assert all_fps.cond_id.tolist() == labels.tolist()
    assert set(unique.cond_id.tolist()) <= set(labels.tolist())
    assert len(set(all_fps.n_iters.tolist())) > 1  # one Adam run per state, each stopping on its own
    _, all_one = fpf.find_fixed_points(states[:1], inputs[:1])  # the reference crashes on a batch of one
    assert all_one.n == 1


def test_the_reference_examples_analysis_part_runs_as_written(flipflop):
    """examples/torch/run_FlipFlop.py's find_fixed_points(), with only the import changed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fpf_client.compat import plot_fps

    rnn, hidden = flipflop
    fpf_hps = {
        "max_iters": 10000,
        "lr_init": 1.0,
        "outlier_distance_scale": 10.0,
        "verbose": True,
        "super_verbose": True,
    }
    fpf = FixedPointFinder(rnn, **fpf_hps)
    initial_states = fpf.sample_states(hidden, n_inits=1024, noise_scale=0.5)
    inputs = np.zeros([1, 3])
    unique_fps, all_fps = fpf.find_fixed_points(initial_states, inputs)
    fig = plot_fps(unique_fps, hidden, plot_batch_idx=list(range(30)), plot_start_time=10)
    try:
        lines = fig.axes[0].get_lines()
        trials = [line for line in lines if len(line.get_data_3d()[0]) == hidden.shape[1] - 10]
        assert len(trials) == 30
        assert sum(line.get_marker() == "." for line in lines) == int(unique_fps.is_stable.sum()) == 8
    finally:
        plt.close(fig)
    assert all_fps.n == 1024


def test_outlier_helpers(searches):
    fpf, initial_states, unique, _ = searches["default"]
    q = np.sort(unique.qstar)[len(unique.qstar) // 2]
    high, low = fpf.identify_q_outliers(unique, q), fpf.identify_q_non_outliers(unique, q)
    assert sorted([*high, *low]) == list(range(unique.n)) and (unique.qstar[high] > q).all()
    far = unique.transform(np.eye(16), 100.0)  # every point moved far from the initial states
    assert fpf.identify_distance_non_outliers(far, initial_states, 10.0).size == 0
    assert fpf.identify_distance_non_outliers(unique, initial_states, 10.0).size == unique.n


def test_approximate_updates_and_the_exact_step(searches):
    """Near a stable point the linearisation predicts the step to second order in the distance; the
    exact step is the network's own (run here in float32 through the shipped cell)."""
    fpf, _, unique, _ = searches["default"]
    cell = torch.jit.load(str(DATA / "flipflop_tanh.pt"))
    point = unique.stable[0]
    offsets = np.random.default_rng(5).normal(size=(6, 16))
    offsets /= np.linalg.norm(offsets, axis=1, keepdims=True)
    for eps in (1e-2, 1e-3):
        states = point.xstar + eps * offsets
        approx, exact = fpf.approximate_updates(states, np.zeros((1, 3)), point)
        with torch.no_grad():
            truth = cell(torch.zeros(6, 3), torch.as_tensor(states, dtype=torch.float32)).numpy()
        np.testing.assert_allclose(exact, truth, atol=1e-6)
        assert approx.shape == (1, 6, 16)
        assert np.abs(approx[0] - exact).max() < 10 * eps**2 + 1e-5
    only = fpf.approximate_updates(states, np.zeros((1, 3)), unique, do_compute_exact_update=False)
    assert only.shape == (unique.n, 6, 16)
    remote_like = FixedPointFinder("a-model-id", verbose=False)
    with pytest.raises(ValueError, match="do_compute_exact_update=False"):
        remote_like.approximate_updates(states, np.zeros((1, 3)), unique)


def test_options_map_to_fpf(flipflop):
    rnn, _ = flipflop
    assert set(REFERENCE_DEFAULTS) <= set(FixedPointFinder.default_hps())
    fpf = FixedPointFinder(rnn, max_n_unique=np.inf, do_compute_jacobians=False, do_rerun_q_outliers=True)
    assert fpf.options.max_n_unique is None and not fpf.options.do_decompose_jacobians
    assert fpf.options.unique_rule == "reference" and fpf.max_n_unique == np.inf
    fpf = FixedPointFinder(rnn, method="sequential", alr_hps={}, agnc_hps={"percentile": 90}, q_slow=1e-6)
    assert fpf.options.method == "adam" and fpf.options.batch_size == 1 and fpf.options.agnc_hps.percentile == 90
    assert FixedPointFinder(rnn, do_rerun_outliers=True).options.do_rerun_q_outliers  # an older spelling
    with pytest.raises(InvalidOptions, match=r"unknown hyperparameter.*'tol_qq'.*known: .*tol_q"):
        FixedPointFinder(rnn, tol_qq=1e-9)
    with pytest.raises(InvalidOptions, match="unknown method 'bfgs'; known: joint, sequential, auto"):
        FixedPointFinder(rnn, method="bfgs")
