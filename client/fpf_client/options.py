"""Job options: the one definition shared by the engine, the gateway, gRPC and the client.

Names and defaults follow FixedPointFinder (Golub & Sussillo 2018) where an option
exists there; the rest are fpf's own. The model is strict: an unknown option is an
error, never silently ignored (the reference tool ignores some of its own options).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

#: ``auto`` picks ``lm`` or ``lm_krylov`` by network size and the result's ``info["method"]`` names the one
#: that ran; the rest name one solver each (docs/engine.md, "Methods").
Method = Literal["auto", "lm", "lm_krylov", "newton_krylov", "anderson", "adam"]
#: Method names of earlier versions, still accepted with a DeprecationWarning.
DEPRECATED_METHODS = {"newton": "auto"}
Dynamics = Literal["discrete", "continuous"]
UniqueRule = Literal["converged", "reference"]


class AdamHps(BaseModel):
    """Adam's moment decay rates and denominator constant (TF FixedPointFinder's ``adam_hps``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    epsilon: float = Field(1e-8, gt=0, description="torch's default; TF FixedPointFinder uses 0.01.")


class AdaptiveLearningRate(BaseModel):
    """The TF reference's adaptive learning rate (``alr_hps``), used by ``adam`` in place of
    reduce-on-plateau: after an optional warm-up, the rate falls by ``decrease_factor`` when the
    newest mean q is worse than each of the previous ``min_steps_per_decrease``, and rises by
    ``increase_factor`` after ``min_steps_per_increase`` strictly falling steps; no change
    follows another within that many steps. ``min_rate`` and ``max_n_steps`` never stop a
    search (as in the reference); they are accepted so that its dictionaries validate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_rate: float | None = Field(None, gt=0, description="None: lr_init.")
    min_rate: float = Field(1e-3, ge=0)
    max_n_steps: float = Field(1e4, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    warmup_scale: float = Field(1e-3, gt=0, le=1)
    warmup_shape: Literal["linear", "exp", "gaussian"] = "gaussian"
    do_decrease_rate: bool = True
    min_steps_per_decrease: int = Field(5, ge=0)
    decrease_factor: float = Field(0.95, ge=0, le=1)
    do_increase_rate: bool = True
    min_steps_per_increase: int = Field(5, ge=0)
    increase_factor: float = Field(1 / 0.95, ge=1)
    verbose: bool = False


class AdaptiveGradNormClip(BaseModel):
    """The TF reference's adaptive gradient-norm clipping (``agnc_hps``): the gradient of mean q
    is rescaled to at most ``percentile`` of the last ``sliding_window_len`` gradient norms
    (``init_clip_val`` before the first), never above ``max_clip_val``; without adaptive
    clipping, always at ``max_clip_val``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    do_adaptive_clipping: bool = True
    sliding_window_len: int = Field(128, ge=1)
    percentile: float = Field(95.0, ge=0, le=100)
    init_clip_val: float = Field(1e12, gt=0)
    max_clip_val: float = Field(1e12, gt=0)
    verbose: bool = False


class AdamOptions(BaseModel):
    """Options of ``method="adam"``, the reference's Adam (FixedPointFinder's names and defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr_init: float = Field(1.0, gt=0, description="Initial learning rate.")
    lr_factor: float = Field(0.95, gt=0, lt=1, description="Learning-rate decrease on plateau.")
    lr_patience: int = Field(5, ge=0, description="Iterations without improvement before decreasing.")
    lr_cooldown: int = Field(0, ge=0, description="Iterations to wait after a decrease.")
    hps: AdamHps = Field(AdamHps.model_validate({}), description="Betas and epsilon (the reference's adam_hps).")
    alr_hps: AdaptiveLearningRate | None = Field(
        None, description="The TF reference's adaptive learning rate instead of reduce-on-plateau."
    )
    agnc_hps: AdaptiveGradNormClip | None = Field(
        None, description="Clip the gradient's global norm adaptively (the TF reference's agnc)."
    )


class LmOptions(BaseModel):
    """Options of ``method="lm"`` (and of ``auto`` where it runs lm): Anderson mixing, then dense
    Levenberg-Marquardt. The float64 refinement of every method runs this solver with ``lambda_init``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warm_start_iters: int | None = Field(
        None,
        ge=0,
        description="Anderson steps before LM, at most max_iters // 2; 0: none. None: 20 up to 32 states, 300 above.",
    )
    lambda_init: float = Field(1e-6, gt=0, description="Each sample's first damping, relative to mean(diag J^T J).")


class LmKrylovOptions(BaseModel):
    """Options of ``method="lm_krylov"`` (and of ``auto`` where it runs lm_krylov): Anderson mixing,
    then Levenberg-Marquardt with steps by CGLS on Jacobian products."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warm_start_iters: int = Field(300, ge=0, description="Anderson steps before LM; 0: none.")
    lambda_init: float = Field(1e-3, gt=0, description="Each sample's first damping, relative to |J|_F^2 / d.")
    cg_iters: int = Field(
        30,
        ge=1,
        description="CGLS iterations (a Jacobian-vector and a vector-Jacobian product each) per step, at most.",
    )
    cg_rtol: float = Field(
        1e-3, gt=0, lt=1, description="CGLS stops when |J^T r - mu s| falls below this fraction of |J^T G|."
    )


class NewtonKrylovOptions(BaseModel):
    """Options of ``method="newton_krylov"``: trust-region Newton steps by restarted GMRES."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gmres_restart: int = Field(10, ge=1, description="Krylov basis size of a GMRES cycle.")
    gmres_max_restarts: int = Field(5, ge=0, description="GMRES cycles after the first, per Newton step, at most.")


class AndersonOptions(BaseModel):
    """Options of ``method="anderson"``; the Anderson warm starts of lm and lm_krylov keep their own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory: int = Field(6, ge=1, le=100, description="Differences of iterates each sample keeps.")


#: Options of earlier versions that now live in a method's group: flat name -> (group, field).
#: Still accepted with a DeprecationWarning; a flat name and its field with different values is an error.
DEPRECATED_OPTIONS: dict[str, tuple[str, str]] = {
    "lr_init": ("adam", "lr_init"),
    "lr_factor": ("adam", "lr_factor"),
    "lr_patience": ("adam", "lr_patience"),
    "lr_cooldown": ("adam", "lr_cooldown"),
    "adam_hps": ("adam", "hps"),
    "alr_hps": ("adam", "alr_hps"),
    "agnc_hps": ("adam", "agnc_hps"),
}


def _moved_option(flat: str) -> Any:
    """Read access to a deprecated flat option at its place in its method's group."""
    group, field = DEPRECATED_OPTIONS[flat]

    def read(options: BaseModel) -> Any:
        warnings.warn(f"option {flat!r} is now {group}.{field}", DeprecationWarning, stacklevel=2)
        return getattr(getattr(options, group), field)

    return property(read, doc=f"Deprecated: {group}.{field}.")


class FinderOptions(BaseModel):
    """Options of a fixed-point search.

    Attributes are grouped as: solver choice and stopping, uniqueness and outliers,
    Jacobians and their decomposition, numerics and execution; then one group per method
    (``adam``, ``lm``, ``lm_krylov``, ``newton_krylov``, ``anderson``), as scipy's per-method
    ``options``: each is read only by its method, and setting another method's group is allowed
    (it has no effect). The flat names of earlier versions (:data:`DEPRECATED_OPTIONS`) are
    accepted, and readable, with a DeprecationWarning.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- solver and stopping -------------------------------------------------------
    method: Method = Field(
        "auto",
        description="Solver. auto: lm below 64 states, lm_krylov from 64 (the result's info['method'] says which "
        "ran). lm: Anderson mixing, then batched damped Newton (Levenberg-Marquardt) with exact Jacobians. "
        "lm_krylov: the same on Jacobian products, matrix-free. newton_krylov: trust-region Newton-GMRES. "
        "anderson: Anderson mixing alone. adam: the reference's Adam. 'newton' is the old name of auto.",
    )
    tol_q: float = Field(1e-12, gt=0, description="A sample has converged when q = 0.5*|G|^2 < tol_q.")
    tol_dq: float = Field(
        1e-20,
        ge=0,
        description="adam stops when |dq| < tol_dq * learning rate; lm, lm_krylov and newton_krylov stop a "
        "sample as stalled when its last accepted decrease of q is below tol_dq.",
    )
    max_iters: int = Field(5000, ge=1, le=1_000_000, description="Iteration cap per sample.")
    completeness: Literal["auto", "none", "midpoints"] = Field(
        "auto",
        description="midpoints: after the first pass, restart from midpoints between the attractors found, to "
        "find the saddles connecting them that it missed. auto: midpoints for method auto below 256 states, "
        "else none.",
    )
    refinement: Literal["auto", "float64", "none"] = Field(
        "auto",
        description="float64: samples a float32 search left at its rounding floor of q are solved again in "
        "float64 and certified there. auto: float64 for every method but adam (which keeps the reference's "
        "behaviour).",
    )
    q_slow: float | None = Field(
        None, gt=0, description="Also return slow points: unconverged minima with q below this value."
    )

    # --- uniqueness and outliers ---------------------------------------------------
    tol_unique: float = Field(1e-3, gt=0, description="Points closer than this (max-norm) are one fixed point.")
    unique_rule: UniqueRule = Field(
        "converged",
        description="converged: fixed points are the samples that met tol_q, de-duplicated in max-norm; "
        "reference: FixedPointFinder's rule, every sample de-duplicated in the 2-norm of (xstar, inputs).",
    )
    return_all_samples: bool = Field(
        False, description="Also return every initial state's outcome, in order, as all_samples."
    )
    max_n_unique: int | None = Field(None, ge=1, description="Keep at most this many unique points.")
    do_exclude_distance_outliers: bool = True
    outlier_distance_scale: float = Field(10.0, gt=0)
    do_rerun_q_outliers: bool = False
    outlier_q_scale: float = Field(10.0, gt=0)

    # --- Jacobians ---------------------------------------------------------------
    do_compute_jacobians: bool = True
    do_compute_input_jacobians: bool = True
    do_decompose_jacobians: bool = True
    n_eigs: int | None = Field(
        None,
        ge=1,
        description="Decompose only the n_eigs least stable modes, by Arnoldi on Jacobian-vector products "
        "(large networks); None: all, densely.",
    )
    tol_nonisolated: float = Field(
        1e-3, gt=0, description="Flag a point as non-isolated when an eigenvalue lies this close to 1 (or 0)."
    )

    # --- numerics and execution ------------------------------------------------------
    dtype: Literal["float32", "float64"] = "float32"
    random_seed: int = Field(0, ge=0)
    batch_size: int | None = Field(None, ge=1, description="Initial states solved at once; None picks by memory.")
    device: Literal["cpu", "cuda", "auto"] = "auto"
    dynamics: Dynamics | None = Field(None, description="Override the model's own dynamics type.")

    # --- per-method options: each read only by its method ------------------------------
    adam: AdamOptions = Field(AdamOptions.model_validate({}), description="Options of method adam.")
    lm: LmOptions = Field(LmOptions.model_validate({}), description="Options of method lm.")
    lm_krylov: LmKrylovOptions = Field(LmKrylovOptions.model_validate({}), description="Options of method lm_krylov.")
    newton_krylov: NewtonKrylovOptions = Field(
        NewtonKrylovOptions.model_validate({}), description="Options of method newton_krylov."
    )
    anderson: AndersonOptions = Field(AndersonOptions.model_validate({}), description="Options of method anderson.")

    # --- the flat names of earlier versions, read-only (DEPRECATED_OPTIONS) ---------
    lr_init: ClassVar[Any] = _moved_option("lr_init")
    lr_factor: ClassVar[Any] = _moved_option("lr_factor")
    lr_patience: ClassVar[Any] = _moved_option("lr_patience")
    lr_cooldown: ClassVar[Any] = _moved_option("lr_cooldown")
    adam_hps: ClassVar[Any] = _moved_option("adam_hps")
    alr_hps: ClassVar[Any] = _moved_option("alr_hps")
    agnc_hps: ClassVar[Any] = _moved_option("agnc_hps")

    @field_validator("method", mode="before")
    @classmethod
    def _rename_deprecated_method(cls, value: Any) -> Any:
        if isinstance(value, str) and value in DEPRECATED_METHODS:
            new = DEPRECATED_METHODS[value]
            warnings.warn(
                f"method={value!r} is now called {new!r}; {value!r} will stop working in a later version",
                DeprecationWarning,
                stacklevel=2,
            )
            return new
        return value

    @model_validator(mode="before")
    @classmethod
    def _group_deprecated_options(cls, data: Any) -> Any:
        """Move options given by their names of earlier versions into their method's group."""
        if not isinstance(data, dict):
            return data
        for flat in sorted(DEPRECATED_OPTIONS.keys() & data.keys()):
            group, field = DEPRECATED_OPTIONS[flat]
            warnings.warn(
                f"option {flat!r} is now {group}.{field}; {flat!r} will stop working in a later version",
                DeprecationWarning,
                stacklevel=3,
            )
        return regroup(data)

    @model_validator(mode="after")
    def _check_consistency(self) -> FinderOptions:
        if self.q_slow is not None and self.q_slow <= self.tol_q:
            raise ValueError("q_slow must be larger than tol_q")
        if self.do_decompose_jacobians and not self.do_compute_jacobians:
            raise ValueError("do_decompose_jacobians requires do_compute_jacobians")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The schema, with the flat names of earlier versions as deprecated properties."""
        json_schema = handler.resolve_ref_schema(handler(core_schema))
        properties = json_schema["properties"]
        for flat, (group, field) in DEPRECATED_OPTIONS.items():
            in_group = handler.resolve_ref_schema(properties[group])["properties"][field]
            moved = {key: value for key, value in in_group.items() if key not in ("default", "description", "title")}
            properties[flat] = {**moved, "deprecated": True, "description": f"Deprecated: use {group}.{field}."}
        return json_schema


def regroup(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the flat names of earlier versions (:data:`DEPRECATED_OPTIONS`) moved into
    their method's group, silently (``fpf_client.compat`` takes them as the reference's own names).

    Raises
    ------
    ValueError
        Where a flat name and its field in the group are both given, with different values.
    """
    moved = DEPRECATED_OPTIONS.keys() & options.keys()
    if not moved:
        return options
    options = dict(options)
    for flat in sorted(moved):
        group, field = DEPRECATED_OPTIONS[flat]
        options[group] = _with_field(
            FinderOptions.model_fields[group].annotation, options.get(group), field, options.pop(flat), flat
        )
    return options


def _with_field(group_model: Any, given: Any, field: str, value: Any, flat: str) -> Any:
    """The group ``given`` (a mapping, a model or None) with ``field`` set to ``value``, the value of
    the deprecated option ``flat``; an error when the group sets that field to something else."""
    if isinstance(given, BaseModel):
        given = given.model_dump(exclude_unset=True)
    if given is None:
        given = {}
    if not isinstance(given, dict):
        return given  # not an object: validation reports it
    if field in given and not _same_value(group_model, field, given[field], value):
        group = DEPRECATED_OPTIONS[flat][0]
        raise ValueError(f"{flat} (deprecated) and {group}.{field} differ; give {group}.{field} alone")
    return {**given, field: value}


def _same_value(group_model: Any, field: str, a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same value of ``group_model.field`` once validated."""
    try:
        return bool(getattr(group_model(**{field: a}), field) == getattr(group_model(**{field: b}), field))
    except ValidationError:
        return bool(a == b)
