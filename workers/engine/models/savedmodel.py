"""TensorFlow SavedModel step models: scanned against an op allow-list, then run by TF for F and its Jacobians.

A SavedModel arrives as a directory or a ``.zip`` / ``.tar.gz`` of one. Its signature
(``serving_default`` unless named) takes u ``(n, m)`` and h ``(n, d)`` and returns the next
state. Before TF loads anything, every op the model can run is checked against an
allow-list (:mod:`.savedmodel_scan`): a SavedModel can read and write the server's files,
start processes or reach the network (``ReadFile``, ``WriteFile``, ``PyFunc``, ...) when
it is called. The solvers are shared with torch: only F and its derivatives run in TF,
inside ``tf.function``s with a fixed input signature (traced once; eager calls would
retrace every time), and cross over as torch tensors.

TensorFlow is imported here only when a SavedModel is loaded, so torch-only workers
start fast.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fpf_client.errors import InvalidModel

from .adapt import check_derivatives
from .archive import archive_kind, extract_archive, list_members
from .base import Dynamics, StepModel
from .naming import assign_roles, check_size_hints, pick_output
from .savedmodel_scan import ScanReport, scan_savedmodel

SAVED_MODEL_FILE = "saved_model.pb"

_FLOAT_DTYPES = {1: torch.float32, 2: torch.float64}  # tensorflow.DataType DT_FLOAT, DT_DOUBLE
_HALF_DTYPES = {19: "float16", 14: "bfloat16"}  # DT_HALF, DT_BFLOAT16


def load_savedmodel(
    path_or_archive: str | Path,
    *,
    signature: str = "serving_default",
    input_name: str | None = None,
    state_name: str | None = None,
    output_name: str | None = None,
    dynamics: Dynamics = "discrete",
    n_states: int | None = None,
    n_inputs: int | None = None,
) -> SavedModelStep:
    """Load a SavedModel directory, or a ``.zip`` / ``.tar.gz`` of one, as a step model.

    Parameters
    ----------
    path_or_archive : the directory or the uploaded archive.
    signature : the signature to run.
    input_name, state_name, output_name : the signature's arguments and output playing
        u, h and the next state; found by name when None (see :mod:`.naming`), or by elimination.
    dynamics : "discrete" (a map) or "continuous" (a vector field).
    n_states, n_inputs : optional hints, checked against the signature's shapes.

    Raises
    ------
    InvalidModel
        An unsafe archive; no SavedModel inside; an op outside the allow-list; no such
        signature; arguments that cannot be told apart or have the wrong shapes.
    """
    with _unpacked(Path(path_or_archive)) as directory:
        meta_graph = _read_meta_graph(directory)
        step_signature = resolve_signature(
            meta_graph, signature, input_name=input_name, state_name=state_name, output_name=output_name
        )
        report = scan_savedmodel(meta_graph, signature)
        check_size_hints(step_signature.n_states, step_signature.n_inputs, n_states=n_states, n_inputs=n_inputs)
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(directory))
        except Exception as exc:
            raise InvalidModel(f"TensorFlow cannot load the SavedModel: {type(exc).__name__}: {exc}") from None
    model = SavedModelStep(loaded, step_signature, dynamics)
    _dry_run(model, report)
    return model


def looks_like_savedmodel(path: str | Path) -> bool:
    """Whether ``path`` is a SavedModel directory or an archive holding a ``saved_model.pb``."""
    path = Path(path)
    if path.is_dir():
        return (path / SAVED_MODEL_FILE).is_file()
    if archive_kind(path) is None:
        return False
    return any(name.replace("\\", "/").rsplit("/", 1)[-1] == SAVED_MODEL_FILE for name in list_members(path))


@dataclass(frozen=True)
class SavedModelSignature:
    """The signature's argument and output names playing u, the state and F(h, u), and the sizes.

    The state may be several arguments (``state_names``, sizes ``state_sizes``), concatenated in
    that order into h, and the next state as many outputs (``output_names``) in the same order.
    ``time_axis``: u is fed as a length-1 sequence ``(n, 1, m)`` (a Keras layer's input).
    """

    name: str
    input_name: str | None
    state_names: tuple[str, ...]
    output_names: tuple[str, ...]
    state_sizes: tuple[int, ...]
    n_inputs: int
    dtype: torch.dtype
    time_axis: bool = False

    @property
    def n_states(self) -> int:
        return sum(self.state_sizes)


class SavedModelStep(StepModel):
    """F and its derivatives computed by TensorFlow, on torch tensors.

    Each method is a ``tf.function`` with a fixed input signature around the loaded
    signature: ``batch_jacobian`` for Jacobians, a forward accumulator for ``jvp``, a
    tape for ``vjp``. Tensors cross via numpy on the CPU and via DLPack on a GPU.
    """

    format = "savedmodel"

    def __init__(self, loaded: Any, signature: SavedModelSignature, dynamics: Dynamics = "discrete") -> None:
        import tensorflow as tf

        self.signature = signature
        self.n_states = signature.n_states
        self.n_inputs = signature.n_inputs
        self.dynamics = dynamics
        self._loaded = loaded  # keeps the variables the concrete function reads alive
        self._dtype = signature.dtype
        self._device = torch.device("cuda" if tf.config.list_physical_devices("GPU") else "cpu")
        self._functions = _tf_functions(loaded.signatures[signature.name], signature)
        self._routes: dict[str, str] = {}

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SavedModelStep:
        """``self``: a SavedModel computes in its signature's dtype, on the device TF chose."""
        if dtype is not None and dtype != self._dtype:
            raise InvalidModel(
                f"this SavedModel computes in {str(self._dtype).removeprefix('torch.')}: export it with "
                f"{str(dtype).removeprefix('torch.')} input signatures to analyse it in that precision"
            )
        if device is not None and torch.device(device).type != self._device.type:
            raise InvalidModel(f"TensorFlow runs this SavedModel on {self._device.type}, not {torch.device(device)}")
        return self

    def step(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self._call("step", h, u)

    def jacobian_states(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self._call("jacobian_states", h, u)

    def jacobian_inputs(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.n_inputs == 0:
            return h.new_zeros(h.shape[0], self.n_states, 0)
        return self._call("jacobian_inputs", h, u)

    def jvp(self, h: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._call("jvp", h, u, v)

    def vjp(self, h: torch.Tensor, u: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._call("vjp", h, u, w)

    def choose_derivatives(self, h: torch.Tensor, u: torch.Tensor, *, vectorize: bool = True) -> None:
        """Use the unvectorized Jacobians and jvp where TF cannot vectorize them for this graph (tried
        first only when ``vectorize``: trying costs seconds on graphs with loops, where it fails).

        Raises
        ------
        InvalidModel
            When neither way differentiates the signature.
        """
        for name in ("jacobian_states", "jacobian_inputs", "jvp"):
            if name == "jacobian_inputs" and self.n_inputs == 0:
                continue
            if vectorize:
                try:
                    with _quiet_tensorflow():  # a failed vectorisation logs pages of graph dumps
                        self._call(name, h, u, *([h] if name == "jvp" else []))
                    continue
                except Exception:
                    pass
            self._routes[name] = f"{name}/unvectorized"
            try:
                self._call(name, h, u, *([h] if name == "jvp" else []))
            except Exception as exc:
                raise InvalidModel(
                    f"TensorFlow cannot differentiate the signature ({name}): {type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[-1][:300]}"
                ) from None

    def _call(self, name: str, h: torch.Tensor, u: torch.Tensor, *extra: torch.Tensor) -> Any:
        name = self._routes.get(name, name)
        if u.shape[0] != h.shape[0]:
            u = u.expand(h.shape[0], u.shape[1])
        out = self._functions[name](*(_to_tf(t, self._dtype) for t in (h, u, *extra)))
        if isinstance(out, tuple):
            return tuple(_to_torch(t, h.device) for t in out)
        return _to_torch(out, h.device)


@contextmanager
def _quiet_tensorflow() -> Iterator[None]:
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _tf_functions(concrete: Any, signature: SavedModelSignature) -> dict[str, Any]:
    """The traced-once tf.functions F, dF/dh, dF/du, jvp and vjp, all taking (h, u[, tangent]).

    The Jacobians and jvp also come ``/unvectorized``: TF's vectorisation (pfor) of
    ``batch_jacobian`` and forward mode fail on some graphs (a Keras layer's ``While`` loop
    over TensorLists); these take one backward pass per state instead.
    """
    import tensorflow as tf

    dtype = tf.float32 if signature.dtype == torch.float32 else tf.float64
    spec_h = tf.TensorSpec([None, signature.n_states], dtype)
    spec_u = tf.TensorSpec([None, signature.n_inputs], dtype)
    zero = tf.UnconnectedGradients.ZERO

    def call(h: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
        parts = tf.split(h, list(signature.state_sizes), axis=1) if len(signature.state_sizes) > 1 else [h]
        arguments = dict(zip(signature.state_names, parts))
        if signature.input_name is not None:
            arguments[signature.input_name] = u[:, None, :] if signature.time_axis else u
        out = concrete(**arguments)
        nexts = [out[key] for key in signature.output_names]
        return tf.concat(nexts, axis=1) if len(nexts) > 1 else nexts[0]

    @tf.function(input_signature=[spec_h, spec_u])
    def step(h: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
        return call(h, u)

    def batch_jacobian(wrt_states: bool, vectorized: bool) -> Any:
        @tf.function(input_signature=[spec_h, spec_u])
        def jacobian(h: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
            x = h if wrt_states else u
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = call(h, u)
            return tape.batch_jacobian(out, x, unconnected_gradients=zero, experimental_use_pfor=vectorized)

        return jacobian

    @tf.function(input_signature=[spec_h, spec_u, spec_h])
    def jvp(h: tf.Tensor, u: tf.Tensor, v: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.autodiff.ForwardAccumulator(h, v) as accumulator:
            out = call(h, u)
        return out, accumulator.jvp(out, unconnected_gradients=zero)

    unvectorized_states = batch_jacobian(True, False)

    @tf.function(input_signature=[spec_h, spec_u, spec_h])
    def jvp_by_jacobian(h: tf.Tensor, u: tf.Tensor, v: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return call(h, u), tf.einsum("nij,nj->ni", unvectorized_states(h, u), v)

    @tf.function(input_signature=[spec_h, spec_u, spec_h])
    def vjp(h: tf.Tensor, u: tf.Tensor, w: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(h)
            out = call(h, u)
        return out, tape.gradient(out, h, output_gradients=w, unconnected_gradients=zero)

    return {
        "step": step,
        "vjp": vjp,
        "jacobian_states": batch_jacobian(True, True),
        "jacobian_inputs": batch_jacobian(False, True),
        "jvp": jvp,
        "jacobian_states/unvectorized": unvectorized_states,
        "jacobian_inputs/unvectorized": batch_jacobian(False, False),
        "jvp/unvectorized": jvp_by_jacobian,
    }


def _to_tf(tensor: torch.Tensor, dtype: torch.dtype) -> Any:
    import tensorflow as tf

    tensor = tensor.detach().to(dtype).contiguous()
    if tensor.device.type == "cuda":
        return tf.experimental.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(tensor))
    return tf.convert_to_tensor(tensor.numpy())


def _to_torch(tensor: Any, device: torch.device) -> torch.Tensor:
    import tensorflow as tf

    if device.type == "cuda":
        return torch.utils.dlpack.from_dlpack(tf.experimental.dlpack.to_dlpack(tensor))
    return torch.from_numpy(np.array(tensor))


def _dry_run(model: SavedModelStep, report: ScanReport) -> None:
    """Call F on a small batch: catches signatures whose output is not (n, n_states), and, when the
    step writes its own variables, steps whose output those writes change (F must be pure); then
    take every derivative once, choosing the ways TF can compute them for this graph."""
    generator = torch.Generator().manual_seed(0)
    h = (0.5 * torch.randn(3, model.n_states, generator=generator)).to(model.dtype)
    u = (0.5 * torch.randn(3, model.n_inputs, generator=generator)).to(model.dtype)
    try:
        out = model.step(h, u)
        again = model.step(h, u) if report.writes else out
    except Exception as exc:
        raise InvalidModel(f"the SavedModel fails on a batch of 3 states: {type(exc).__name__}: {exc}") from None
    if tuple(out.shape) != (3, model.n_states):
        raise InvalidModel(
            f"output {', '.join(model.signature.output_names)} has shape {tuple(out.shape)} for 3 states; "
            f"a step model returns the next state, shape (3, {model.n_states})"
        )
    if not torch.equal(out, again):
        write = report.writes[0]
        raise InvalidModel(
            f"the step is not a pure function of (u, h): it writes variable {write.variable!r} "
            f"({write.op} in {write.function}) and returns other values when called again on the same states; "
            "export a step that reads its variables only"
        )
    model.choose_derivatives(h, u, vectorize=not report.loops)
    check_derivatives(model)


@contextmanager
def _unpacked(path: Path) -> Iterator[Path]:
    """Yield the SavedModel directory: ``path`` itself, or found inside the extracted archive."""
    if path.is_dir():
        yield path
        return
    if archive_kind(path) is None:
        raise InvalidModel(f"{path.name} is neither a SavedModel directory nor a .zip/.tar.gz of one")
    workdir = Path(tempfile.mkdtemp(prefix="fpf-savedmodel-"))
    try:
        root = extract_archive(path, workdir / "upload")
        found = sorted(p.parent for p in root.rglob(SAVED_MODEL_FILE) if p.is_file())
        if len(found) != 1:
            raise InvalidModel(
                f"the archive must hold exactly one SavedModel ({SAVED_MODEL_FILE}); it holds {len(found)}"
            )
        yield found[0]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _read_meta_graph(directory: Path) -> Any:
    from tensorflow.core.protobuf import saved_model_pb2

    pb = directory / SAVED_MODEL_FILE
    if not pb.is_file():
        raise InvalidModel(f"no {SAVED_MODEL_FILE} in the SavedModel directory")
    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString(pb.read_bytes())
    except Exception as exc:
        raise InvalidModel(f"{SAVED_MODEL_FILE} is not a readable SavedModel: {exc}") from None
    if len(saved_model.meta_graphs) != 1:
        raise InvalidModel(f"the SavedModel has {len(saved_model.meta_graphs)} meta graphs; fpf reads exactly one")
    return saved_model.meta_graphs[0]


def resolve_signature(
    meta_graph: Any,
    name: str,
    *,
    input_name: str | None = None,
    state_name: str | None = None,
    output_name: str | None = None,
) -> SavedModelSignature:
    """Find u, the state parts and the next state's parts among the signature's arguments and
    outputs; check shapes.

    ``state_name`` and ``output_name`` may list several comma-separated names: the state is then
    the concatenation of those arguments (an LSTM's ``h,c``) and the next state that of those
    outputs, in the same order. Arguments named ``h`` and ``c`` are such a pair without naming.
    """
    available = [key for key in meta_graph.signature_def if not key.startswith("__")]
    if name not in meta_graph.signature_def:
        raise InvalidModel(f"the SavedModel has no signature {name!r}; it has {', '.join(map(repr, available))}")
    signature_def = meta_graph.signature_def[name]
    inputs, outputs = dict(signature_def.inputs), dict(signature_def.outputs)
    state_names = _names(state_name) or _lstm_pair(inputs, input_name)
    if len(state_names) > 1:
        input_name = _input_beside(inputs, state_names, input_name)
        output_names = _names(output_name) or _next_of(state_names, list(outputs))
    else:
        how = (
            "Name the signature's arguments u (n, n_inputs) and h (n, n_states), e.g. tf.function(input_signature="
            "[tf.TensorSpec([None, m], name='u'), tf.TensorSpec([None, d], name='h')]), or name them at upload "
            "(an LSTM's state may be two arguments: state_name='h,c', output_name='h_next,c_next')."
        )
        shapes = {key: _shape_text(info) for key, info in inputs.items()}
        sequences = [key for key, info in inputs.items() if _rank(info) == 3]
        if input_name is None and len(sequences) == 1 and len(inputs) == 2:
            input_name = sequences[0]  # a Keras layer's input, (n, time, m), beside a state (n, d)
        input_name, single = assign_roles(
            shapes, input_name=input_name, state_name=state_names[0] if state_names else None, how=how
        )
        state_names = (single,)
        output_names = _names(output_name) or (_pick_next_state(list(outputs)),)
    for given in output_names:
        if given not in outputs:
            raise InvalidModel(f"the model has no output {given!r}; its outputs are {', '.join(map(repr, outputs))}")
    if len(output_names) != len(state_names):
        raise InvalidModel(
            f"the state is {len(state_names)} argument(s) ({', '.join(state_names)}) but the next state "
            f"{len(output_names)} output(s) ({', '.join(output_names)}): name as many outputs as state arguments"
        )
    parts = [_matrix(inputs[key], key, "state") for key in state_names]
    dtype = parts[0][0]
    n_inputs, time_axis = 0, False
    if input_name is not None:
        input_dtype, n_inputs, time_axis = _input_matrix(inputs[input_name], input_name)
        if input_dtype != dtype:
            raise InvalidModel(f"input {input_name!r} and state {state_names[0]!r} have different dtypes")
    if any(part_dtype != dtype for part_dtype, _ in parts):
        raise InvalidModel(f"the state arguments {', '.join(state_names)} have different dtypes")
    return SavedModelSignature(
        name, input_name, state_names, output_names, tuple(size for _, size in parts), n_inputs, dtype, time_axis
    )


def _pick_next_state(outputs: list[str]) -> str:
    """The one output, or the one named h_next (...); several positional outputs (``output_0``,
    ``output_1``: a Keras cell's ``(output, [state])`` returned as it is) get the fix spelled out."""
    try:
        return pick_output(outputs, None)
    except InvalidModel as error:
        if all(key.startswith("output_") for key in outputs):
            raise InvalidModel(
                f"the signature returns several outputs ({', '.join(outputs)}), as a Keras cell's (output, [state]) "
                "returned as it is: return the next state alone, e.g. {'h_next': cell(u, [h])[1][0]}, or name "
                "it at upload (output_name)"
            ) from None
        raise error


def _names(given: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in given.split(",") if part.strip()) if given else ()


def _lstm_pair(inputs: dict[str, Any], input_name: str | None) -> tuple[str, ...]:
    """``("h", "c")`` when the signature takes both (an LSTM state as two arguments), else ()."""
    names = {key.lower(): key for key in inputs if key != input_name}
    return (names["h"], names["c"]) if "h" in names and "c" in names else ()


def _input_beside(inputs: dict[str, Any], state_names: tuple[str, ...], input_name: str | None) -> str | None:
    """u: the named input, else the one argument that is not a state part (None: autonomous)."""
    described = ", ".join(f"{key!r} {_shape_text(info)}" for key, info in inputs.items())
    for key in (*state_names, *([input_name] if input_name else [])):
        if key not in inputs:
            raise InvalidModel(f"the model has no input {key!r}; its inputs are {described}")
    rest = [key for key in inputs if key not in state_names]
    if input_name is not None:
        if len(rest) > 1:
            raise InvalidModel(f"the signature takes arguments besides u and the state: {described}")
        return input_name
    if len(rest) > 1:
        raise InvalidModel(f"cannot tell the input u among the signature's arguments {described}: name it at upload")
    return rest[0] if rest else None


def _next_of(state_names: tuple[str, ...], outputs: list[str]) -> tuple[str, ...]:
    """The outputs ``<part>_next`` of each state part (``h_next``, ``c_next``), else a clear refusal."""
    lowered = {key.lower(): key for key in outputs}
    found = tuple(lowered.get(f"{part.lower()}_next") for part in state_names)
    if all(found):
        return found  # type: ignore[return-value]
    wanted = ", ".join(f"{part}_next" for part in state_names)
    raise InvalidModel(
        f"the state is the arguments {', '.join(state_names)}; the signature's outputs {', '.join(map(repr, outputs))} "
        f"do not include {wanted}: name them so, or give output_name='{','.join(f'{p}_next' for p in state_names)}' "
        "with your outputs' names at upload"
    )


def _rank(info: Any) -> int | None:
    return None if info.tensor_shape.unknown_rank else len(info.tensor_shape.dim)


def _input_matrix(info: Any, key: str) -> tuple[torch.dtype, int, bool]:
    """(dtype, m, whether u carries a time axis): u is (n, m), or a length-1 sequence (n, 1 | None, m)."""
    if _rank(info) != 3:
        return (*_matrix(info, key, "input"), False)
    batch, time, size = (d.size for d in info.tensor_shape.dim)
    if time > 1:
        raise InvalidModel(
            f"input {key!r} is a sequence of {time} time steps {_shape_text(info)}; a step model takes one: "
            "export the layer with an input of shape (None, 1, m) (keras.Input((1, m))) or (None, m)"
        )
    dtype, m = _check_matrix(info.dtype, [batch, size], _shape_text(info), key, "input")
    return dtype, m, True


def _matrix(info: Any, key: str, role: str) -> tuple[torch.dtype, int]:
    if info.tensor_shape.unknown_rank:
        raise InvalidModel(f"{role} {key!r} must be a matrix (n, size); its rank is unknown")
    return _check_matrix(info.dtype, [d.size for d in info.tensor_shape.dim], _shape_text(info), key, role)


def _check_matrix(dtype: int, dims: list[int], text: str, key: str, role: str) -> tuple[torch.dtype, int]:
    """(torch dtype, size) of a float32/float64 argument of shape (None, size); refuses anything else."""
    if dtype in _HALF_DTYPES:
        raise InvalidModel(
            f"{role} {key!r} is {_HALF_DTYPES[dtype]}: fixed points need float32 or float64; "
            "export the step with float32 input signatures (cast the weights, e.g. keras.mixed_precision "
            "policy 'float32')"
        )
    if dtype not in _FLOAT_DTYPES:
        raise InvalidModel(f"{role} {key!r} must be float32 or float64")
    if len(dims) != 2:
        raise InvalidModel(f"{role} {key!r} must be a matrix (n, size); it is {text}")
    if dims[0] != -1:
        raise InvalidModel(
            f"{role} {key!r} has a fixed batch size {dims[0]}: trace the signature with TensorSpec([None, size]) "
            "so that many states are solved at once"
        )
    if dims[1] < 1:
        raise InvalidModel(f"{role} {key!r} must have a fixed size in its second dimension")
    return _FLOAT_DTYPES[dtype], int(dims[1])


def _shape_text(info: Any) -> str:
    if info.tensor_shape.unknown_rank:
        return "(unknown rank)"
    return "(" + ", ".join("?" if d.size < 0 else str(d.size) for d in info.tensor_shape.dim) + ")"


__all__ = ["SavedModelSignature", "SavedModelStep", "load_savedmodel", "looks_like_savedmodel", "resolve_signature"]
