"""FixedPointFinder's hyperparameters (torch and TF versions) as fpf's :class:`FinderOptions`.

Each reference name keeps its meaning and default; fpf's own options are accepted alongside.
Adam's (``lr_*``, ``adam_hps``, ``alr_hps``, ``agnc_hps``) go to fpf's ``adam`` group.
What the reference does in Python (printing) stays here; everything else becomes an option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, get_args

from ..errors import InvalidOptions
from ..options import DEPRECATED_METHODS, FinderOptions, regroup

#: The reference's names and defaults. ``method`` defaults to fpf's solver: name ``"joint"``
#: (or ``"sequential"``) to run the reference's Adam.
REFERENCE_DEFAULTS: dict[str, Any] = {
    "tol_q": 1e-12,
    "tol_dq": 1e-20,
    "max_iters": 5000,
    "method": FinderOptions.model_fields["method"].default,
    "do_rerun_q_outliers": False,
    "outlier_q_scale": 10.0,
    "do_exclude_distance_outliers": True,
    "outlier_distance_scale": 10.0,
    "tol_unique": 1e-3,
    "max_n_unique": math.inf,
    "do_compute_jacobians": True,
    "do_decompose_jacobians": True,
    "dtype": "float32",
    "random_seed": 0,
    "verbose": True,
    "super_verbose": False,
    "n_iters_per_print_update": 100,
    # torch version
    "lr_init": 1.0,
    "lr_patience": 5,
    "lr_factor": 0.95,
    "lr_cooldown": 0,
    # TF version: None leaves the control off (torch's behaviour); {} turns it on with its defaults
    "adam_hps": {},
    "alr_hps": None,
    "agnc_hps": None,
}

#: What ``method`` means in the reference.
REFERENCE_METHODS: dict[str, dict[str, Any]] = {
    "joint": {"method": "adam"},
    "sequential": {"method": "adam", "batch_size": 1},
}
#: Names that only steer what this layer prints.
PRINT_NAMES = ("verbose", "super_verbose", "n_iters_per_print_update")
#: Older spellings some scripts still use.
ALIASES = {"do_rerun_outliers": "do_rerun_q_outliers"}


@dataclass(frozen=True)
class Printing:
    verbose: bool = True
    super_verbose: bool = False
    n_iters_per_print_update: int = 100


def known_names() -> list[str]:
    """Every name the compat constructor accepts."""
    return sorted(set(REFERENCE_DEFAULTS) | set(FinderOptions.model_fields) | set(ALIASES))


def to_options(hps: dict[str, Any]) -> tuple[FinderOptions, Printing, str | None]:
    """Map reference hyperparameters to (options, printing, reference method name or None).

    Raises
    ------
    InvalidOptions
        For an unknown name (the message lists the known ones) or a value fpf refuses.
    """
    hps = {ALIASES.get(name, name): value for name, value in hps.items()}
    unknown = sorted(set(hps) - set(known_names()))
    if unknown:
        raise InvalidOptions(
            f"unknown hyperparameter{'s' if len(unknown) > 1 else ''} {unknown}; known: {', '.join(known_names())}"
        )
    printing = Printing(**{name: hps.pop(name) for name in PRINT_NAMES if name in hps})
    method = hps.get("method")
    fpf_methods = get_args(FinderOptions.model_fields["method"].annotation)
    if method is not None and method not in (*REFERENCE_METHODS, *fpf_methods, *DEPRECATED_METHODS):
        raise InvalidOptions(f"unknown method {method!r}; known: {', '.join([*REFERENCE_METHODS, *fpf_methods])}")
    reference_method = method if method in REFERENCE_METHODS else None
    if reference_method is not None:
        hps.pop("method")
        hps = {**REFERENCE_METHODS[reference_method], **hps}
    if hps.get("max_n_unique") is not None and math.isinf(hps["max_n_unique"]):
        hps["max_n_unique"] = None
    elif hps.get("max_n_unique") is not None:
        hps["max_n_unique"] = int(hps["max_n_unique"])
    if hps.get("do_compute_jacobians") is False:  # the reference decomposes only what it computed
        hps["do_decompose_jacobians"] = False
    for name in ("adam_hps", "alr_hps", "agnc_hps"):  # TF's extra keys (verbose) are accepted there too
        if hps.get(name) is None:
            hps.pop(name, None)
    hps.setdefault("unique_rule", "reference")
    hps.setdefault("return_all_samples", True)
    try:  # the reference's lr_* and *_hps are fpf's adam group, with no deprecation
        hps = regroup(hps)
    except ValueError as error:
        raise InvalidOptions(str(error)) from None
    from ..payloads import options_payload

    options = FinderOptions(**options_payload(hps))
    return options, printing, reference_method
