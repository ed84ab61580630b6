"""torch.export programs (``.pt2`` from ``torch.export.save``) as step models.

An exported program is an ATen graph with its weights: ``forward(u: (n, m), h: (n, d))``
with the batch dimension exported as dynamic (``dynamic_shapes``), returning the next
state. Its input shapes are declared, so n_states and n_inputs are read off them. Before
it is run, every op of the graph (and of its control-flow subgraphs) must be an ATen or
prims op other than those that touch files, or ``getitem``, or a control-flow operator;
the worker's sandbox stays the security boundary. Derivatives come from torch's autograd
and ``torch.func`` on the loaded graph, as for any torch step.
"""

from __future__ import annotations

import operator
import zipfile
from pathlib import Path
from typing import Any

import torch

from fpf_client.errors import InvalidModel

from .adapt import module_step_model
from .base import Dynamics
from .naming import check_size_hints
from .torch_step import TorchStepModel

_ARCHIVE_FORMAT = "archive_format"
_NAMESPACES = frozenset({"aten", "prims"})
#: ATen ops that read files.
_REFUSED = frozenset({"from_file"})
_CONTROL_FLOW = frozenset(
    {"cond", "while_loop", "map_impl", "scan", "wrap_with_set_grad_enabled", "wrap_with_autocast"}
)


def is_torch_export(path: Path) -> bool:
    """Whether ``path`` is a ``torch.export.save`` archive: a zip whose ``<name>/archive_format`` says pt2."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            marker = next((name for name in archive.namelist() if name.rsplit("/", 1)[-1] == _ARCHIVE_FORMAT), None)
            return marker is not None and archive.read(marker).strip() == b"pt2"
    except (zipfile.BadZipFile, OSError, KeyError):
        return False


class ExportedStep(torch.nn.Module):
    """An exported program's module with the step signature ``forward(u, h) -> h_next``.

    The program is fixed in the mode it was exported in (torch refuses ``eval()`` on it), so
    switching this wrapper's mode leaves it alone.
    """

    def __init__(self, program: torch.nn.Module) -> None:
        super().__init__()
        self.program = program

    def train(self, mode: bool = True) -> ExportedStep:
        self.training = mode
        return self

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> Any:
        return self.program(u, h)


def load_torch_export(
    path: str | Path, *, n_states: int | None = None, n_inputs: int | None = None, dynamics: Dynamics = "discrete"
) -> TorchStepModel:
    """Load a ``.pt2`` step program on the CPU, scan its ops and check it against the step contract.

    Raises
    ------
    InvalidModel
        The file does not load; an op outside ATen (or one touching files); inputs that are not
        ``(u, h)`` matrices with a dynamic batch dimension; or a program that fails the contract.
    """
    try:
        program = torch.export.load(str(path))
    except Exception as error:
        first_line = next((line for line in str(error).splitlines() if line.strip()), "")
        raise InvalidModel(f"not a loadable torch.export program: {type(error).__name__}: {first_line}") from None
    scan_program(program)
    d, m = _declared_sizes(program)
    check_size_hints(d, m, n_states=n_states, n_inputs=n_inputs)
    return module_step_model(
        ExportedStep(program.module()),
        n_states=d,
        n_inputs=m,
        dynamics=dynamics,
        format="torch_export",
        copy_module=False,
    )


def scan_program(program: Any) -> None:
    """Refuse a program with an op that is not an ATen/prims op, ``getitem`` or control flow."""
    refused = []
    for name, module in program.graph_module.named_modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            if node.op != "call_function" or not _allowed(node.target):
                refused.append(f"{node.target} (node {node.name!r} in {name or 'the graph'})")
    if refused:
        unique = list(dict.fromkeys(refused))
        raise InvalidModel(
            "the program holds ops a step model may not run (fpf runs ATen tensor ops only): "
            + ", ".join(unique[:5])
            + (f" and {len(unique) - 5} more" if len(unique) > 5 else "")
        )


def _allowed(target: Any) -> bool:
    if target is operator.getitem:
        return True
    if isinstance(target, torch._ops.OpOverload):
        return target.namespace in _NAMESPACES and target._schema.name.split("::")[-1] not in _REFUSED
    if isinstance(target, torch._ops.HigherOrderOperator):
        return target.name() in _CONTROL_FLOW
    return False


def _declared_sizes(program: Any) -> tuple[int, int]:
    """(n_states, n_inputs) from the program's two user inputs u (n, m) and h (n, d)."""
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    inputs = [placeholders[name] for name in program.graph_signature.user_inputs]
    if len(inputs) != 2:
        raise InvalidModel(
            f"the program takes {len(inputs)} inputs; the step contract is forward(u, h) -> h_next with "
            "u: (n, n_inputs) and h: (n, n_states)"
        )
    sizes = []
    for role, node in zip(("u", "h"), inputs, strict=True):
        value = node.meta.get("val")
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else ()
        if len(shape) != 2:
            raise InvalidModel(f"input {role} ({node.name!r}) has shape {shape}; the step takes matrices (n, size)")
        if value.dtype in (torch.float16, torch.bfloat16):
            raise InvalidModel(
                f"input {role} ({node.name!r}) is {str(value.dtype).removeprefix('torch.')}: fixed points need "
                "float32 or float64; export the model after model.float()"
            )
        if isinstance(shape[0], int):
            raise InvalidModel(
                f"input {role} ({node.name!r}) has a fixed batch size {shape[0]}: export with "
                "dynamic_shapes=({0: torch.export.Dim('batch')}, {0: torch.export.Dim('batch')}) so that many "
                "states are solved at once"
            )
        if not isinstance(shape[1], int):
            raise InvalidModel(f"input {role} ({node.name!r}) must have a fixed size in its second dimension")
        sizes.append(shape[1])
    return sizes[1], sizes[0]


__all__ = ["ExportedStep", "is_torch_export", "load_torch_export", "scan_program"]
