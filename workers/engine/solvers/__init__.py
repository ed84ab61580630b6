"""Root-finding solvers for G(x) = F(x, u) - x (or f(x, u)), by method name.

Each solver is a function ``(problem, x0, options, *, progress=None, **method_specific)
-> SolveResult``; add one by writing a module in ``methods/`` and registering it in :data:`SOLVERS`. When its
progress hook raises :class:`TimeUp`, a solver ends the running samples as ``CAPPED`` and returns.
"""

from __future__ import annotations

from .base import Problem, ProgressHook, Solver, SolveResult, Status, TimeUp
from .methods.adam import solve_adam
from .methods.anderson import solve_anderson
from .methods.lm import solve_lm
from .methods.lm_krylov import solve_lm_krylov
from .methods.newton_krylov import solve_newton_krylov

#: Method name (``FinderOptions.method``) -> solver function.
SOLVERS: dict[str, Solver] = {
    "lm": solve_lm,
    "adam": solve_adam,
    "newton_krylov": solve_newton_krylov,
    "lm_krylov": solve_lm_krylov,
    "anderson": solve_anderson,
}


def get_solver(method: str) -> Solver:
    """The solver registered for ``method``."""
    try:
        return SOLVERS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(SOLVERS)}") from None


__all__ = [
    "SOLVERS",
    "Problem",
    "ProgressHook",
    "SolveResult",
    "Solver",
    "Status",
    "TimeUp",
    "get_solver",
    "solve_adam",
    "solve_anderson",
    "solve_lm",
    "solve_lm_krylov",
    "solve_newton_krylov",
]
