"""What a SavedModel can run when fpf loads it and calls its signature, checked against an allow-list.

TensorFlow runs only some of a SavedModel's graph: the served signature's function and
what it calls (through ``PartitionedCall``, control flow and any function-valued
attribute), the gradient functions of those, and what the loader itself calls
(resource creators and initialisers, custom checkpoint restore functions). The
variable-initialiser nodes Keras leaves in the top-level graph and the checkpoint
save/restore functions of the saver are never run by ``tf.saved_model.load``. So the
scan walks from those roots, and only the ops it reaches must be allowed; every
refusal names the op, the function holding it and the call path from its root.

Writes to the model's own variables (a Keras seed generator advancing its state) are
allowed inside the reachable step when the written handle is one of the SavedModel's
variables; the loader then checks that the step stays a pure function of (u, h).
The bubblewrap sandbox remains the security boundary; this scan is a second wall.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fpf_client.errors import InvalidModel

#: Ops a step function may run: arithmetic, array manipulation, control flow, variable reads, and
#: stateless random numbers (functions of their seed; Keras seed generators feed them). Anything
#: else (file, network, process, Python or printing ops) is refused.
ALLOWED_OPS = frozenset(
    """
    Const Identity IdentityN NoOp Placeholder PlaceholderWithDefault StopGradient PreventGradient CheckNumerics
    EnsureShape Snapshot VarHandleOp ReadVariableOp VarIsInitializedOp StatefulPartitionedCall PartitionedCall
    If StatelessIf While StatelessWhile Case StatelessCase Add AddV2 AddN Sub Mul MulNoNan Div RealDiv DivNoNan
    FloorDiv FloorMod Mod Neg Reciprocal Inv Square SquaredDifference Sqrt Rsqrt Pow Exp Expm1 Log Log1p Abs
    Sign Maximum Minimum Floor Ceil Round Rint Tanh Sigmoid Sin Cos Tan Asin Acos Atan Atan2 Sinh Cosh Asinh
    Acosh Atanh Erf Erfc Relu Relu6 Elu Selu LeakyRelu Softplus Softsign Softmax LogSoftmax ClipByValue MatMul
    BatchMatMul BatchMatMulV2 BatchMatMulV3 Einsum BiasAdd Cumsum Cumprod Sum Mean Max Min Prod All Any ArgMax
    ArgMin EuclideanNorm FusedBatchNormV3 Equal NotEqual Less LessEqual Greater GreaterEqual LogicalAnd
    LogicalOr LogicalNot Select SelectV2 IsFinite IsNan IsInf Where Reshape Shape ShapeN Size Rank Squeeze
    ExpandDims Concat ConcatV2 Split SplitV Slice StridedSlice Pack Unpack Transpose Fill ZerosLike OnesLike
    Cast Tile Gather GatherV2 GatherNd Range BroadcastTo BroadcastArgs ReverseV2 MatrixDiag MatrixDiagV3
    MatrixDiagPartV3 MatrixBandPart Pad PadV2 MirrorPad OneHot TensorScatterUpdate TensorListReserve
    TensorListFromTensor TensorListGetItem TensorListSetItem TensorListStack TensorListLength
    TensorListElementShape StatelessRandomGetKeyCounter StatelessRandomGetKeyCounterAlg StatelessRandomGetAlg
    StatelessRandomNormal StatelessRandomNormalV2 StatelessRandomUniform StatelessRandomUniformV2
    StatelessTruncatedNormal StatelessTruncatedNormalV2 StatelessRandomUniformInt StatelessRandomUniformIntV2
    StatelessRandomUniformFullIntV2
    """.split()  # noqa: SIM905 - one op name per word reads better than a list of strings
)
#: Ops that write a resource variable: allowed only on the SavedModel's own variables (see module docs).
VARIABLE_WRITE_OPS = frozenset({"AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp"})
#: Control-flow ops whose first input selects a branch and is not passed to the called function.
_SELECTOR_FIRST = frozenset({"If", "StatelessIf", "Case", "StatelessCase"})
#: Children of a resource object that ``tf.saved_model.load`` calls by itself.
_LOADER_CALLED = ("_create_resource", "_initialize", "_destroy_resource")


@dataclass(frozen=True)
class VariableWrite:
    """A write-op on one of the model's variables inside the reachable step."""

    op: str
    function: str
    variable: str
    path: tuple[str, ...]


@dataclass(frozen=True)
class ScanReport:
    """What the scan found the served step does besides arithmetic."""

    writes: list[VariableWrite]
    #: Whether the step runs a ``While`` loop (TF cannot vectorize Jacobians through a Keras layer's).
    loops: bool


@dataclass(frozen=True)
class _Frame:
    """A function reached from a root, how (its call path), and what its arguments are bound to:
    for each argument, the top-level graph node feeding it (None when not a variable handle)."""

    function: str
    path: tuple[str, ...]
    arguments: tuple[str | None, ...]


def scan_savedmodel(meta_graph: Any, signature: str) -> ScanReport:
    """Refuse a SavedModel whose served ``signature`` or loader can run an op outside the allow-list.

    Returns
    -------
    ScanReport
        The writes to the model's own variables the step performs (none for most models; the
        caller checks that they leave the step pure), and whether it runs loops.

    Raises
    ------
    InvalidModel
        Naming each refused op, the function holding it and the call path from its root.
    """
    graph = meta_graph.graph_def
    library = {f.signature.name: f for f in graph.library.function}
    nodes = {n.name: n for n in graph.node}
    variables = {n.name for n in graph.node if n.op == "VarHandleOp"}
    refused: list[str] = []
    writes: list[VariableWrite] = []
    loops = False
    queue: deque[_Frame] = deque()
    seen: set[tuple[str, tuple[str | None, ...]]] = set()

    def enqueue(function: str, path: tuple[str, ...], arguments: tuple[str | None, ...]) -> None:
        # A function is walked once per binding of its arguments: a write it makes is allowed
        # only where every caller hands it one of the model's variables.
        if function in library and (function, arguments) not in seen:
            seen.add((function, arguments))
            queue.append(_Frame(function, (*path, function), arguments))

    for function, path, arguments in _loader_roots(meta_graph, library, signature):
        enqueue(function, path, arguments)
    for root, path in _graph_roots(meta_graph, signature):
        for node in _graph_closure(nodes, root):
            where = (*path, f"node {node.name!r}")
            callees = _callees(node, library)
            if not callees and node.op not in ALLOWED_OPS:
                refused.append(_refusal(node.op, "the top-level graph", where))
            bound = tuple(_base(i) if _base(i) in variables else None for i in _data_inputs(node))
            for callee, skip in callees:
                enqueue(callee, where, bound[skip:])
    for registered in graph.library.registered_gradients:
        enqueue(registered.gradient_func, (f"the registered gradient of {registered.registered_op_type!r}",), ())

    while queue:
        frame = queue.popleft()
        fdef = library[frame.function]
        arguments = {arg.name: bound for arg, bound in zip(fdef.signature.input_arg, frame.arguments, strict=False)}
        by_name = {n.name: n for n in fdef.node_def}
        for node in fdef.node_def:
            callees = _callees(node, library)
            loops = loops or node.op in ("While", "StatelessWhile")
            if node.op in VARIABLE_WRITE_OPS:
                variable = _resolve_variable(node.input[0], arguments, by_name)
                if variable is None:
                    refused.append(
                        _refusal(
                            node.op,
                            frame.function,
                            frame.path,
                            "it writes a resource that is not one of the model's variables",
                        )
                    )
                else:
                    writes.append(VariableWrite(node.op, frame.function, variable, frame.path))
            elif not callees and node.op not in ALLOWED_OPS:
                refused.append(_refusal(node.op, frame.function, frame.path))
            bound = tuple(_resolve_variable(i, arguments, by_name) for i in _data_inputs(node))
            for callee, skip in callees:
                enqueue(callee, (*frame.path, f"node {node.name!r}"), bound[skip:])
        for companion in _companions(graph.library, fdef, library):
            enqueue(companion, (*frame.path, "its gradient"), ())
    if refused:
        unique = list(dict.fromkeys(refused))
        raise InvalidModel(
            "the SavedModel can run ops a step model may not (file, network, process or other side effects): "
            + "; ".join(unique[:5])
            + (f"; and {len(unique) - 5} more" if len(unique) > 5 else "")
        )
    return ScanReport(writes, loops)


def _refusal(op: str, function: str, path: tuple[str, ...], why: str = "") -> str:
    return f"{op} in {function}, reached by {' -> '.join(path)}" + (f" ({why})" if why else "")


def _graph_roots(meta_graph: Any, signature: str) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Top-level graph nodes TF runs: the signature's outputs (as the SignatureDef names them),
    and the init op a TF1-style loader runs."""
    label = f"signature {signature!r}"
    if signature in meta_graph.signature_def:
        for output in meta_graph.signature_def[signature].outputs.values():
            yield _base(output.name), (label,)
    init = meta_graph.signature_def.get("__saved_model_init_op")
    if init is not None:
        for output in init.outputs.values():
            yield _base(output.name), ("the SavedModel's init op",)
    for key in ("saved_model_main_op", "legacy_init_op"):
        if key in meta_graph.collection_def:
            for name in meta_graph.collection_def[key].node_list.value:
                yield _base(name), (f"the {key} collection",)
    if not meta_graph.object_graph_def.nodes and meta_graph.saver_def.restore_op_name:
        # A TF1 SavedModel: its loader also runs the saver's restore op.
        yield _base(meta_graph.saver_def.restore_op_name), ("the TF1 saver's restore op",)


def _loader_roots(
    meta_graph: Any, library: dict[str, Any], served: str
) -> Iterator[tuple[str, tuple[str, ...], tuple[str | None, ...]]]:
    """Functions ``tf.saved_model.load`` or ``loaded.signatures`` call by themselves, from the object
    graph, with their captured variables: the served signature's concrete function (whatever the
    SignatureDef says), resource creators and initialisers, custom checkpoint save/restore functions."""
    objects = meta_graph.object_graph_def.nodes
    if not objects:
        return
    concrete = meta_graph.object_graph_def.concrete_functions

    def functions(node_id: int, why: str) -> Iterator[tuple[str, tuple[str, ...], tuple[str | None, ...]]]:
        obj = objects[node_id] if 0 <= node_id < len(objects) else None
        kind = obj.WhichOneof("kind") if obj is not None else None
        names = (
            list(obj.function.concrete_functions)
            if kind == "function"
            else [obj.bare_concrete_function.concrete_function_name]
            if kind == "bare_concrete_function"
            else []
        )
        for name in names:
            if name not in library:
                continue
            captured = tuple(
                objects[i].variable.name or f"object {i}"
                if 0 <= i < len(objects) and objects[i].WhichOneof("kind") == "variable"
                else None
                for i in (concrete[name].bound_inputs if name in concrete else ())
            )
            n_args = len(library[name].signature.input_arg)
            yield name, (why,), (None,) * (n_args - len(captured)) + captured

    root = objects[0]
    for child in root.children:
        if child.local_name == "signatures":
            for signature in objects[child.node_id].children:
                if signature.local_name == served:
                    yield from functions(signature.node_id, f"signature {served!r}")
    for obj in objects:
        if obj.WhichOneof("kind") == "resource":
            for child in obj.children:
                if child.local_name in _LOADER_CALLED:
                    yield from functions(child.node_id, f"the loader's call of a resource's {child.local_name}")
        for name, saveable in obj.saveable_objects.items():
            for node_id in (saveable.save_function, saveable.restore_function):
                yield from functions(node_id, f"the checkpoint function of saveable {name!r}")


def _graph_closure(nodes: dict[str, Any], root: str) -> Iterator[Any]:
    """The top-level graph nodes ``root`` depends on (data and control inputs), itself included."""
    stack, seen = [root], set()
    while stack:
        name = stack.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        node = nodes[name]
        yield node
        stack.extend(_base(i) for i in node.input)


def _callees(node: Any, library: dict[str, Any]) -> list[tuple[str, int]]:
    """(function, number of leading inputs not passed to it) for every function ``node`` calls."""
    if node.op in library:
        return [(node.op, 0)]
    skip = 1 if node.op in _SELECTOR_FIRST else 0
    called = []
    for value in node.attr.values():
        if value.HasField("func"):
            called.append((value.func.name, skip))
        called.extend((func.name, skip) for func in value.list.func)
    return called


def _data_inputs(node: Any) -> list[str]:
    return [i for i in node.input if not i.startswith("^")]


def _base(tensor: str) -> str:
    """The node (or argument) name of a tensor reference: ``^n``, ``n:0``, ``n:out:0`` -> ``n``."""
    return tensor.lstrip("^").split(":")[0]


def _resolve_variable(tensor: str, arguments: dict[str, str | None], by_name: dict[str, Any]) -> str | None:
    """The model variable a resource tensor inside a function is, following Identity nodes back to an
    argument bound to one of the top-level graph's variable handles; None for anything else."""
    for _ in range(64):
        name = _base(tensor)
        if name in arguments:
            return arguments[name]
        node = by_name.get(name)
        if node is None or node.op != "Identity" or not node.input:
            return None
        tensor = node.input[0]
    return None


def _companions(library_def: Any, fdef: Any, library: dict[str, Any]) -> Iterator[str]:
    """Functions TF may run to differentiate ``fdef``: its registered gradient, and the forward and
    backward functions (or any other function) its attributes name."""
    for gradient in library_def.gradient:
        if gradient.function_name == fdef.signature.name:
            yield gradient.gradient_func
    for value in fdef.attr.values():
        if value.HasField("func"):
            yield value.func.name
        if value.HasField("s") and value.s.decode(errors="replace") in library:
            yield value.s.decode()


__all__ = ["ALLOWED_OPS", "VARIABLE_WRITE_OPS", "ScanReport", "VariableWrite", "scan_savedmodel"]
