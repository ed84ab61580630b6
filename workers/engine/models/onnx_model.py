"""ONNX step models: checked, converted to torch with onnx2torch, validated against onnxruntime.

An ONNX step graph takes the input ``u: (n, m)`` and the state ``h: (n, d)`` (batch
dimension dynamic) and returns the next state ``(n, d)``. It runs as a torch module so
that autograd gives exact Jacobians; onnxruntime, an independent implementation of
the same graph, checks the conversion on random inputs before the model is accepted.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, external_data_helper

from fpf_client.errors import InvalidModel

from .archive import archive_kind, extract_archive, list_members
from .base import Dynamics
from .naming import assign_roles, check_size_hints, pick_output
from .onnx_ops import convert_onnx
from .torch_step import TorchStepModel, own_module

STANDARD_DOMAINS = ("", "ai.onnx")
DEFAULT_TOLERANCE = 1e-4
_FLOAT_TYPES = {TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64}
_OUTPUT = "fpf_next_state"
_N_VALIDATION = 16


@dataclass(frozen=True)
class StepSignature:
    """Which graph tensors play u, h and F(h, u), and their sizes.

    ``input_name`` is None for an autonomous graph (state only; ``n_inputs == 0``).
    ``order`` lists the roles ("u", "h") of the graph's inputs in graph order.
    """

    input_name: str | None
    state_name: str
    output_name: str
    n_inputs: int
    n_states: int
    order: tuple[str, ...]
    dtype: torch.dtype


class OnnxStep(torch.nn.Module):
    """A converted ONNX graph with the step signature ``forward(u, h) -> h_next``.

    Attributes
    ----------
    graph : torch.fx.GraphModule
        The graph converted by onnx2torch, its inputs in graph order.
    signature : StepSignature
    validation : dict
        ``max_abs_diff`` from onnxruntime on random inputs, the ``tolerance`` it was
        accepted with, ``n_samples`` and the ``reference`` runtime.
    """

    def __init__(self, graph: torch.nn.Module, signature: StepSignature) -> None:
        super().__init__()
        self.graph = graph
        self.signature = signature
        self.validation: dict[str, Any] = {}

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        by_role = {"h": h, "u": u}
        return self.graph(*(by_role[role] for role in self.signature.order))


def load_onnx(
    path: str | Path,
    *,
    input_name: str | None = None,
    state_name: str | None = None,
    output_name: str | None = None,
    dynamics: Dynamics = "discrete",
    n_states: int | None = None,
    n_inputs: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> TorchStepModel:
    """Load an ONNX step graph (a ``.onnx`` file, or a zip/tar.gz of one with its external data).

    Parameters
    ----------
    path : the upload.
    input_name, state_name, output_name : graph tensors playing u, h and the next state;
        found by name when None (see :mod:`.naming`), or by elimination.
    dynamics : "discrete" (a map) or "continuous" (a vector field).
    n_states, n_inputs : optional hints, checked against the sizes the graph declares.
    tolerance : accepted max difference from onnxruntime, relative to ``1 + max|output|``.

    Returns
    -------
    TorchStepModel
        Running the converted graph (format ``"onnx"``); ``model.validation`` holds
        the comparison with onnxruntime.

    Raises
    ------
    InvalidModel
        Not ONNX; external data outside the upload; custom-op domains; inputs or
        outputs that cannot be told apart or have the wrong shapes; an op fpf cannot
        convert; or a converted graph that disagrees with onnxruntime.
    """
    with _unpacked(Path(path)) as (onnx_path, upload_dir):
        proto = _read_checked(onnx_path, upload_dir)
    signature = resolve_signature(proto, input_name=input_name, state_name=state_name, output_name=output_name)
    check_size_hints(signature.n_states, signature.n_inputs, n_states=n_states, n_inputs=n_inputs)
    proto = _single_output(proto, signature)
    step = OnnxStep(_convert(proto), signature)
    step.validation = validate_against_onnxruntime(proto, step, tolerance=tolerance)
    model = TorchStepModel(
        own_module(step, copy_module=False),
        n_states=signature.n_states,
        n_inputs=signature.n_inputs,
        dynamics=dynamics,
        format="onnx",
    )
    model.validation = step.validation  # reported in the model record (describe())
    return model


def looks_like_onnx(path: str | Path) -> bool:
    """Whether ``path`` parses as an ONNX model with a graph (cheap header check first),
    or is a zip/tar archive holding a ``.onnx`` file (a model with external data)."""
    path = Path(path)
    if not path.is_file():
        return False
    if archive_kind(path) is not None:
        return any(name.lower().endswith(".onnx") for name in list_members(path))
    with open(path, "rb") as f:
        if f.read(1) != b"\x08":  # field 1 (ir_version, varint) opens every serialised ModelProto
            return False
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return proto.ir_version > 0 and len(proto.graph.node) > 0


@contextmanager
def _unpacked(path: Path) -> Iterator[tuple[Path, Path | None]]:
    """Yield (the .onnx file, the extracted upload directory or None for a single file)."""
    if archive_kind(path) is None:
        yield path, None
        return
    workdir = Path(tempfile.mkdtemp(prefix="fpf-onnx-"))
    try:
        root = extract_archive(path, workdir / "upload")
        found = sorted(p for p in root.rglob("*.onnx") if p.is_file())
        if len(found) != 1:
            raise InvalidModel(f"the archive must hold exactly one .onnx file; it holds {len(found)}")
        yield found[0], root
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _read_checked(onnx_path: Path, upload_dir: Path | None) -> onnx.ModelProto:
    """Parse, refuse external data that leaves the upload and non-standard domains, then load the data."""
    try:
        proto = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise InvalidModel(f"not a readable ONNX model: {exc}") from None
    if not proto.graph.node:
        raise InvalidModel("the ONNX model has an empty graph")
    external = [t for t in external_data_helper._get_all_tensors(proto) if external_data_helper.uses_external_data(t)]
    for tensor in external:
        _check_external_location(tensor, upload_dir)
    if external:
        external_data_helper.load_external_data_for_model(proto, str(onnx_path.parent))
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    custom = sorted({node.domain for node in _all_nodes(proto.graph) if node.domain not in STANDARD_DOMAINS})
    if custom:
        raise InvalidModel(f"the graph uses custom-op domain(s) {', '.join(custom)}: fpf runs standard ONNX ops only")
    return proto


def _check_external_location(tensor: TensorProto, upload_dir: Path | None) -> None:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if upload_dir is None:
        raise InvalidModel(
            f"tensor {tensor.name!r} keeps its data in an external file ({location!r}); a single .onnx upload "
            "must embed its weights, or upload a .zip/.tar.gz holding the .onnx and its data files"
        )
    posix = location.replace("\\", "/")
    target = (upload_dir / posix).resolve()
    if posix.startswith("/") or ".." in posix.split("/") or not target.is_relative_to(upload_dir.resolve()):
        raise InvalidModel(f"tensor {tensor.name!r} refers to external data outside the upload ({location!r})")
    if not target.is_file():
        raise InvalidModel(f"tensor {tensor.name!r} refers to a missing external data file ({location!r})")


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs]:
                yield from _all_nodes(sub)


def resolve_signature(
    proto: onnx.ModelProto,
    *,
    input_name: str | None = None,
    state_name: str | None = None,
    output_name: str | None = None,
) -> StepSignature:
    """Find u, h and the next state among the graph's inputs and outputs and check their shapes."""
    initializers = {t.name for t in proto.graph.initializer}
    inputs = {v.name: v for v in proto.graph.input if v.name not in initializers}
    how = (
        "Name the graph inputs u (n, n_inputs) and h (n, n_states), e.g. torch.onnx.export(..., "
        "input_names=['u', 'h'], output_names=['h_next']), or name them at upload (input_name=, state_name=)."
    )
    shapes = {name: _shape_text(value) for name, value in inputs.items()}
    input_name, state_name = assign_roles(shapes, input_name=input_name, state_name=state_name, how=how)
    # Ordered outputs follow the torch convention: of a tuple, the last is the next state.
    output_name = pick_output([v.name for v in proto.graph.output], output_name, last_by_default=True)
    dtype, n_states = _matrix(inputs[state_name], "state")
    n_inputs = 0
    if input_name is not None:
        input_dtype, n_inputs = _matrix(inputs[input_name], "input")
        if input_dtype != dtype:
            raise InvalidModel(f"input {input_name!r} and state {state_name!r} have different dtypes")
    order = tuple("h" if name == state_name else "u" for name in inputs)
    return StepSignature(input_name, state_name, output_name, n_inputs, n_states, order, dtype)


def _matrix(value: onnx.ValueInfoProto, role: str) -> tuple[torch.dtype, int]:
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
        raise InvalidModel(
            f"{role} {value.name!r} is {TensorProto.DataType.Name(tensor_type.elem_type).lower()}: fixed points "
            "need float32 or float64; export the model after model.float()"
        )
    if tensor_type.elem_type not in _FLOAT_TYPES:
        raise InvalidModel(f"{role} {value.name!r} must be float32 or float64")
    dims = tensor_type.shape.dim
    if len(dims) != 2:
        raise InvalidModel(f"{role} {value.name!r} must be a matrix (n, size); it is {_shape_text(value)}")
    if dims[0].HasField("dim_value"):
        raise InvalidModel(
            f"{role} {value.name!r} has a fixed batch size {dims[0].dim_value}: export with a dynamic first "
            "dimension (dynamic_axes or dynamic_shapes) so that many states are solved at once"
        )
    if not dims[1].HasField("dim_value") or dims[1].dim_value < 1:
        raise InvalidModel(f"{role} {value.name!r} must have a fixed size in its second dimension")
    return _FLOAT_TYPES[tensor_type.elem_type], int(dims[1].dim_value)


def _shape_text(value: onnx.ValueInfoProto) -> str:
    dims = value.type.tensor_type.shape.dim
    return "(" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + ")"


def _single_output(proto: onnx.ModelProto, signature: StepSignature) -> onnx.ModelProto:
    """A copy whose only output is an Identity of the next state (onnx2torch returns whole multi-output nodes)."""
    proto = copy.deepcopy(proto)
    source = next(v for v in proto.graph.output if v.name == signature.output_name)
    proto.graph.node.append(onnx.helper.make_node("Identity", [signature.output_name], [_OUTPUT]))
    output = copy.deepcopy(source)
    output.name = _OUTPUT
    del proto.graph.output[:]
    proto.graph.output.append(output)
    return proto


def _convert(proto: onnx.ModelProto) -> torch.nn.Module:
    try:
        module = convert_onnx(proto)
    except NotImplementedError as exc:
        raise InvalidModel(f"fpf cannot run this ONNX graph: {exc}") from None
    except Exception as exc:
        raise InvalidModel(f"converting the ONNX graph failed: {type(exc).__name__}: {exc}") from None
    module.graph.eliminate_dead_code()
    module.recompile()
    return module


def validate_against_onnxruntime(
    proto: onnx.ModelProto, step: OnnxStep, *, tolerance: float = DEFAULT_TOLERANCE, seed: int = 0
) -> dict[str, Any]:
    """Compare the converted model with onnxruntime on random (h, u); refuse beyond ``tolerance``.

    Returns the report stored as ``OnnxStep.validation``.
    """
    import onnxruntime

    signature = step.signature
    rng = np.random.default_rng(seed)
    np_dtype = np.float32 if signature.dtype == torch.float32 else np.float64
    h = rng.standard_normal((_N_VALIDATION, signature.n_states)).astype(np_dtype)
    u = rng.standard_normal((_N_VALIDATION, signature.n_inputs)).astype(np_dtype)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feeds = {signature.state_name: h}
        if signature.input_name is not None:
            feeds[signature.input_name] = u
        (reference,) = session.run([_OUTPUT], feeds)
    except Exception as exc:
        raise InvalidModel(f"onnxruntime cannot run the graph: {exc}") from None
    try:
        with torch.no_grad():
            converted = step(torch.from_numpy(u), torch.from_numpy(h))
    except Exception as exc:
        raise InvalidModel(
            f"the converted graph fails on a batch of {_N_VALIDATION}: {type(exc).__name__}: {exc}"
        ) from None
    expected_shape = (_N_VALIDATION, signature.n_states)
    if tuple(reference.shape) != expected_shape or tuple(converted.shape) != expected_shape:
        raise InvalidModel(
            f"output {signature.output_name!r} has shape {tuple(reference.shape)} for {_N_VALIDATION} states; "
            f"a step model returns the next state, shape {expected_shape}"
        )
    difference = float(np.max(np.abs(converted.numpy() - reference)))
    scale = 1.0 + float(np.max(np.abs(reference)))
    report = {
        "max_abs_diff": difference,
        "tolerance": tolerance * scale,
        "n_samples": _N_VALIDATION,
        "reference": f"onnxruntime {onnxruntime.__version__}",
    }
    if not difference <= tolerance * scale:
        raise InvalidModel(
            f"the converted graph differs from onnxruntime by {difference:.3g} (tolerance {tolerance * scale:.3g}); "
            "an op is not converted faithfully"
        )
    return report


__all__ = [
    "OnnxStep",
    "StepSignature",
    "load_onnx",
    "looks_like_onnx",
    "resolve_signature",
    "validate_against_onnxruntime",
]
