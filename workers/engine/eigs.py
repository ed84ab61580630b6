"""Leading eigenvalues and eigenvectors of each fixed point's Jacobian, matrix-free.

For large networks a dense eigen-decomposition costs O(d^3) per point and O(d^2) memory;
the modes that matter (the least stable ones) are a few. ARPACK's implicitly restarted
Arnoldi method (``scipy.sparse.linalg.eigs``) finds them from Jacobian-vector products
alone, recorded once per point (:mod:`.solvers.linalg.jacobian_products`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigs

from .models.base import Dynamics, StepModel
from .solvers.linalg.jacobian_products import record_jacobian_products

#: Arnoldi vectors kept per wanted mode. ARPACK's default (2 k + 1, at least 20) restarts far too
#: often when the leading eigenvalues crowd the edge of a disk, as a random network's do; more
#: vectors cut the Jacobian products by several times, at (ncv x d) floats of memory.
NCV_PER_EIG = 16


def leading_eigs(
    model: StepModel,
    xstar: torch.Tensor,
    inputs: torch.Tensor,
    dynamics: Dynamics,
    n_eigs: int,
    *,
    tol: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_eigs`` least stable eigenpairs of dF/dx at each point ``xstar: (k, d)``.

    Least stable: largest |lambda| (discrete time) or largest Re lambda (continuous time),
    in that order, as :func:`workers.engine.analysis.decompose` sorts the full spectrum.

    Returns
    -------
    eigval : ndarray of complex, (k, n_eigs)
    eigvec : ndarray of complex, (k, d, n_eigs)
        Unit eigenvectors as columns.
    """
    k, d = xstar.shape
    if not 0 < n_eigs < d - 1:
        raise ValueError(f"n_eigs must be between 1 and n_states - 2 = {d - 2}, got {n_eigs}")
    which = "LM" if dynamics == "discrete" else "LR"
    eigval = np.zeros((k, n_eigs), dtype=complex)
    eigvec = np.zeros((k, d, n_eigs), dtype=complex)
    for i in range(k):
        lin = record_jacobian_products(model, xstar[i : i + 1], inputs[i : i + 1])

        def matvec(v: np.ndarray, jvp=lin.jvp) -> np.ndarray:
            tangent = torch.as_tensor(np.real(v).reshape(1, d), dtype=xstar.dtype, device=xstar.device)
            return jvp(tangent).detach().cpu().double().numpy().reshape(d)

        operator = LinearOperator((d, d), matvec=matvec, dtype=np.float64)
        start = np.random.default_rng(i).standard_normal(d)
        ncv = min(d, max(2 * n_eigs + 1, NCV_PER_EIG * n_eigs))
        values, vectors = eigs(operator, k=n_eigs, which=which, tol=tol, v0=start, ncv=ncv)
        key = np.abs(values) if dynamics == "discrete" else values.real
        order = np.argsort(-key, kind="stable")
        eigval[i], eigvec[i] = values[order], vectors[:, order]
    return eigval, eigvec
