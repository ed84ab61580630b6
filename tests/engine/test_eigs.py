"""Matrix-free leading eigenpairs against numpy's dense eigen-decomposition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_solvers import Tanh

from workers.engine.analysis import decompose
from workers.engine.eigs import leading_eigs

torch.set_num_threads(1)


@pytest.mark.parametrize("dynamics", ["discrete", "continuous"])
def test_leading_eigenpairs_match_the_dense_decomposition(dynamics):
    generator = torch.Generator().manual_seed(4)
    d = 60
    model = Tanh(1.4 * torch.randn(d, d, generator=generator, dtype=torch.float64) / d**0.5, dynamics=dynamics)
    x = 0.5 * torch.randn(3, d, generator=generator, dtype=torch.float64)
    u = torch.zeros(3, 1, dtype=torch.float64)
    J = model.jacobian_states(x, u).numpy()
    dense_val, _ = decompose(J, dynamics)
    val, vec = leading_eigs(model, x, u, dynamics, 6)
    key = np.abs(val) if dynamics == "discrete" else val.real
    assert (np.diff(key, axis=1) <= 1e-12).all(), "least stable first"
    # the same six values (conjugate pairs may come in either order)
    np.testing.assert_allclose(np.sort_complex(val), np.sort_complex(dense_val[:, :6]), atol=1e-8)
    for i in range(3):  # J v = lambda v for each returned pair, with unit vectors
        np.testing.assert_allclose(J[i] @ vec[i], vec[i] * val[i], atol=1e-8)
        np.testing.assert_allclose(np.linalg.norm(vec[i], axis=0), 1.0, atol=1e-10)


def test_n_eigs_must_leave_room_for_arnoldi():
    model = Tanh(np.eye(4))
    with pytest.raises(ValueError):
        leading_eigs(
            model, torch.zeros(1, 4, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64), "discrete", 3
        )
