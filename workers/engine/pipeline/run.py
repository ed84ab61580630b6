"""What every request of a search shares: the options as they run, the device and the model on it.

The method is resolved here (``auto`` by the network's size), and with it whether the midpoint
restarts run and whether the requests of a batch can share one solver pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from fpf_client.options import FinderOptions

from ..devices import resolve_device
from ..models import Dynamics, StepModel, as_step_model

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


@dataclass(frozen=True)
class Run:
    """The settings of one search (or batch of searches), fixed before any request is read.

    Attributes
    ----------
    model : StepModel
        The model, on ``device`` in ``options.dtype``.
    dynamics : {"discrete", "continuous"}
    options : FinderOptions
        With ``method`` resolved to the solver that runs.
    device : torch.device
    restarts : bool
        Whether the midpoint restarts run (:func:`wants_restarts`).
    newton_with_restarts : bool
        Whether the first pass stops after its Anderson mixing and the samples it leaves take their
        LM steps in one batch with the first midpoint restarts (:func:`newton_with_restarts`).
    batchable : bool
        Whether requests may share one solver pass (:func:`batchable`).
    started : float
        ``time.perf_counter()`` at the start, for ``wall_time_s``.
    """

    model: StepModel
    dynamics: Dynamics
    options: FinderOptions
    device: torch.device
    restarts: bool
    newton_with_restarts: bool
    batchable: bool
    started: float

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.options.dtype)


def start_run(model: Any, options: FinderOptions | None, overrides: dict[str, Any]) -> Run:
    """Validate the options (``overrides`` replace single fields), adapt the model and move it."""
    started = time.perf_counter()
    options = FinderOptions.model_validate({**(options or FinderOptions()).model_dump(exclude_unset=True), **overrides})
    device = resolve_device(options.device)
    step_model = as_step_model(model).to(device, getattr(torch, options.dtype))
    d = step_model.n_states
    method = resolve_method(options.method, d)
    restarts = wants_restarts(options, d)
    return Run(
        model=step_model,
        dynamics=options.dynamics or step_model.dynamics,
        options=options.model_copy(update={"method": method}),
        device=device,
        restarts=restarts,
        newton_with_restarts=newton_with_restarts(method, restarts),
        batchable=batchable(options, d),
        started=started,
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


def newton_with_restarts(method: str, restarts: bool) -> bool:
    """Whether the samples ``lm``'s mixing leaves take their LM steps with the first midpoint restarts:
    both are small batches of dense LM steps, and on them an LM call costs its kernel launches, not
    its arithmetic, so one call for both costs about what each costs alone. Each sample's steps are
    its own (LM damps, accepts and stops per sample), so the samples end where a separate call
    would leave them."""
    return restarts and method == "lm"


def wants_refinement(options: FinderOptions) -> bool:
    """Whether float64 refinement runs: asked for, or ``auto`` for every method but adam, which keeps
    the reference's behaviour."""
    if options.refinement == "auto":
        return options.method != "adam"
    return options.refinement == "float64"


def batchable(options: FinderOptions, n_states: int | None = None) -> bool:
    """Whether requests with these options can share one solver pass with results equal to separate
    searches: true for methods whose samples run independently of the rest of their batch (per-sample
    damping, histories and stop tests: ``lm``, ``anderson``, ``newton_krylov``); false for ``adam``
    (one learning rate for the mean q) and ``lm_krylov`` (dense steps for the last samples of a
    batch, a random probe per row). ``auto`` needs ``n_states`` to know which method it runs."""
    if options.method == "auto" and n_states is None:
        return False
    return resolve_method(options.method, n_states or 0) in BATCHABLE_METHODS
