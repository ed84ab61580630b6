"""The conformance matrix: real exports of the same networks, uploaded to the real service and solved.

Each row is a network exported by its library's own public path (Keras and TensorFlow,
``torch.export``, torch's ONNX exporters, TorchScript), with a TorchScript step of the same
weights as its reference. A row *loads* when the service marks the upload ``ready``; it
gives the *same roots* when its job finds the reference's fixed points (each within
``TOL``, the same stability); *validate s* is the time from upload to ``ready``.

``python -m tests.support.conformance`` starts a service, runs every row and prints the
matrix; ``--write`` replaces the matrix in docs/model-contract.md. The integration tests run
the same rows through the session's service (tests/e2e/test_conformance_matrix.py).
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fpf_client import Client, FixedPoints
from tests.support import export_nets, keras_nets, torch_exports
from tests.support.service_harness import REPO, LiveService, start_service
from workers.engine import as_step_model, find_fixed_points

TOL = 1e-5
OPTIONS = {"method": "auto", "device": "cpu", "dtype": "float32"}
N_INITIAL = 32
WAIT_S = 240
DOC = REPO / "docs" / "model-contract.md"
_BEGIN, _END = "<!-- conformance-matrix:begin -->", "<!-- conformance-matrix:end -->"


@dataclass(frozen=True)
class Row:
    """One export: the uploaded file (or a module the Python client uploads itself), its form fields,
    and the reference step of the same weights."""

    name: str
    path: Path | torch.nn.Module
    reference: torch.nn.Module
    n_states: int
    n_inputs: int
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What the service made of a row."""

    row: str
    loads: bool
    same_roots: bool
    validate_s: float | None
    detail: str = ""


def pack(directory: Path, path: Path) -> Path:
    """``directory`` as ``path`` (.zip or .tar.gz), the directory itself at the archive's top."""
    kind = "gztar" if path.name.endswith(".tar.gz") else "zip"
    shutil.make_archive(str(path).removesuffix(".tar.gz").removesuffix(".zip"), kind, directory.parent, directory.name)
    return path


def keras_rows(root: Path) -> list[Row]:
    """The Keras 3 exports, packed alternately as .tar.gz and .zip."""
    rows = []
    for index, export in enumerate(keras_nets.keras_exports(root)):
        suffix = ".tar.gz" if index % 2 == 0 else ".zip"
        rows.append(
            Row(
                f"{export.name} ({suffix.lstrip('.')})",
                pack(export.directory, root / f"{export.name}{suffix}"),
                export.reference,
                export.n_states,
                keras_nets.N_INPUTS,
            )
        )
    return rows


#: The torch layers of the matrix: kind, layers, batch_first.
_LAYERS = (("RNN", 2, False), ("GRU", 2, True), ("LSTM", 2, False), ("LSTM", 1, True))


def torch_export_rows(root: Path) -> list[Row]:
    """``torch.export`` programs (.pt2) of a hand-written step and of nn.RNN / nn.GRU / nn.LSTM steps."""
    cell = export_nets.Cell("gru", export_nets.weights("gru"))
    d, m = export_nets.n_states("gru"), export_nets.N_INPUTS
    rows = [
        Row(
            "torch.export step module (GRU)",
            torch_exports.export_program(cell, d, m, root / "cell.pt2"),
            torch.jit.script(cell),
            d,
            m,
        )
    ]
    for seed, (kind, layers, batch_first) in enumerate(_LAYERS):
        layer = torch_exports.seeded_layer(kind, num_layers=layers, batch_first=batch_first, seed=seed)
        d = torch_exports.n_states(layer)
        name = f"{kind.lower()}-{layers}-{'bf' if batch_first else 'tf'}"
        path = torch_exports.export_program(
            torch_exports.RecurrentStep(layer), d, torch_exports.N_INPUTS, root / f"{name}.pt2"
        )
        rows.append(
            Row(
                f"torch.export nn.{kind} ({layers} layer{'s' if layers > 1 else ''}, batch_first={batch_first})",
                path,
                torch.jit.script(layer),
                d,
                torch_exports.N_INPUTS,
            )
        )
    return rows


def torchscript_rows(root: Path) -> list[Row]:
    """TorchScript as before (a scripted multi-layer nn.LSTM, fpf packing its state), and an nn.GRU module
    handed to the Python client, which scripts it."""
    layer = torch_exports.seeded_layer("LSTM", num_layers=2, batch_first=False, seed=7)
    path = root / "lstm-scripted.pt"
    torch.jit.save(torch.jit.script(layer), str(path))
    gru = torch_exports.seeded_layer("GRU", num_layers=1, batch_first=True, seed=8)
    return [
        Row(
            "TorchScript nn.LSTM (2 layers, scripted)",
            path,
            torch.jit.script(layer),
            torch_exports.n_states(layer),
            torch_exports.N_INPUTS,
        ),
        Row(
            "nn.GRU module given to the Python client",
            gru,
            torch.jit.script(gru),
            torch_exports.n_states(gru),
            torch_exports.N_INPUTS,
        ),
    ]


#: The ONNX rows: layer kind, layers, exporter, opset, weights in an external-data file.
_ONNX = (
    ("GRU", 1, "legacy", 17, False),
    ("LSTM", 1, "legacy", 17, False),
    ("GRU", 2, "dynamo", 18, False),
    ("LSTM", 2, "dynamo", 19, False),
    ("LSTM", 1, "dynamo", 20, True),
    ("GRU", 1, "dynamo", 21, False),
    ("LSTM", 1, "dynamo", 22, False),
    ("RNN", 1, "dynamo", 23, False),
)


def onnx_rows(root: Path) -> list[Row]:
    """Full nn.GRU / nn.LSTM / nn.RNN steps (the ONNX recurrent ops) by both of torch's exporters; a model
    whose weights the exporter wrote to a side file travels as a zip of both."""
    rows = []
    for seed, (kind, layers, exporter, opset, external) in enumerate(_ONNX):
        layer = torch_exports.seeded_layer(kind, num_layers=layers, batch_first=False, seed=20 + seed)
        d, m = torch_exports.n_states(layer), torch_exports.N_INPUTS
        name = f"{kind.lower()}-{layers}-{exporter}-{opset}"
        folder = root / name
        folder.mkdir()
        path = torch_exports.export_onnx(
            torch_exports.RecurrentStep(layer),
            d,
            m,
            folder / f"{name}.onnx",
            dynamo=exporter == "dynamo",
            opset=opset,
            external_data=external,
        )
        if external:
            path = pack(folder, root / f"{name}.zip")
        where = "external data, zip" if external else "inline"
        rows.append(
            Row(
                f"ONNX {exporter} opset {opset} nn.{kind} ({layers} layer{'s' if layers > 1 else ''}, {where})",
                path,
                torch.jit.script(layer),
                d,
                m,
            )
        )
    looped = torch.jit.script(torch_exports.LoopStep(seed=30).eval())
    path = torch_exports.export_onnx(
        looped, torch_exports.N_UNITS, torch_exports.N_INPUTS, root / "loop.onnx", dynamo=False, opset=17
    )
    rows.append(
        Row(
            "ONNX legacy opset 17 scripted loop over one step (Loop)",
            path,
            looped,
            torch_exports.N_UNITS,
            torch_exports.N_INPUTS,
        )
    )
    return rows


#: Builders of every row group, in the matrix's order.
GROUPS: dict[str, Callable[[Path], list[Row]]] = {
    "keras": keras_rows,
    "torch_export": torch_export_rows,
    "onnx": onnx_rows,
    "torchscript": torchscript_rows,
}


def build_rows(root: Path) -> list[Row]:
    """Every row of the matrix, exported under ``root``."""
    return [row for build in GROUPS.values() for row in build(root)]


def initial_states(n_states: int) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.8, (N_INITIAL, n_states)).astype(np.float32)


def reference_roots(row: Row) -> FixedPoints:
    """The reference step's fixed points, solved in this process with the job's options."""
    model = as_step_model(row.reference, n_states=row.n_states, n_inputs=row.n_inputs)
    return find_fixed_points(model, initial_states(row.n_states), np.zeros((1, row.n_inputs), np.float32), **OPTIONS)


def compare(found: FixedPoints, reference: FixedPoints) -> str:
    """Empty when ``found`` holds the reference's isolated roots within TOL with the same stability, else why not.

    Points the engine flags as not isolated (a saturated GRU's slow manifold, |lambda| = 1) lie anywhere
    along a continuum, so two correct solvers need not place them alike; they are not compared.
    """
    found, reference = _isolated(found), _isolated(reference)
    if reference.shape[0] == 0:
        return "the reference has no isolated fixed point: the row would prove nothing"
    if found.shape[0] != reference.shape[0]:
        return f"{found.shape[0]} isolated fixed points, the reference has {reference.shape[0]}"
    match = [int(np.argmin(np.abs(found[:, :-1] - x).max(axis=1))) for x in reference[:, :-1]]
    if sorted(match) != list(range(found.shape[0])):
        return "the fixed points do not pair up with the reference's"
    error = float(np.abs(found[match, :-1] - reference[:, :-1]).max())
    if error > TOL:
        return f"fixed points differ from the reference's by {error:.2g}"
    if not np.array_equal(found[match, -1], reference[:, -1]):
        return "stability differs from the reference's"
    return ""


def _isolated(points: FixedPoints) -> np.ndarray:
    """The isolated points as rows ``[*xstar, is_stable]``."""
    keep = np.ones(points.n, bool) if points.is_nonisolated is None else ~np.asarray(points.is_nonisolated, bool)
    stable = np.asarray(points.is_stable, np.float64)[keep, None]
    return np.concatenate([np.asarray(points.xstar, np.float64)[keep], stable], axis=1)


def run_row(service: LiveService, row: Row, reference: FixedPoints) -> Outcome:
    """Upload ``row``, wait for validation (timed), solve it, compare with ``reference``."""
    with service.client() as http:
        started = time.perf_counter()
        if isinstance(row.path, torch.nn.Module):
            with Client(service.url) as client:
                model_id = client.upload_model(row.path, wait=False, **row.fields).id
        else:
            with open(row.path, "rb") as f:
                response = http.post("/v1/models", files={"file": (row.path.name, f)}, data=row.fields)
            response.raise_for_status()
            model_id = response.json()["id"]
        model = service.wait_model(model_id, WAIT_S)
        validate_s = time.perf_counter() - started
        if model["status"] != "ready":
            return Outcome(row.name, False, False, None, model["error"]["detail"])
        body = {
            "model_id": model["id"],
            "initial_states": initial_states(row.n_states).tolist(),
            "inputs": np.zeros((1, row.n_inputs)).tolist(),
            "options": OPTIONS,
        }
        response = http.post("/v1/jobs", json=body)
        response.raise_for_status()
        job = service.wait_job(response.json()["id"], WAIT_S)
        if job["status"] != "succeeded":
            return Outcome(row.name, True, False, validate_s, str(job["error"]))
        result = http.get(f"/v1/jobs/{job['id']}/result", params={"format": "npz"}).raise_for_status()
        why = compare(FixedPoints.load(result.content), reference)
        if (model["n_states"], model["n_inputs"]) != (row.n_states, row.n_inputs):
            why = f"sizes ({model['n_states']}, {model['n_inputs']}), expected ({row.n_states}, {row.n_inputs})"
        return Outcome(row.name, True, not why, validate_s, why)


def run_matrix(service: LiveService, rows: list[Row]) -> list[Outcome]:
    return [run_row(service, row, reference_roots(row)) for row in rows]


def markdown(outcomes: list[Outcome]) -> str:
    """The matrix as a markdown table."""
    lines = ["| export path | loads | same roots | validate s |", "|---|---|---|---|"]
    for outcome in outcomes:
        seconds = f"{outcome.validate_s:.1f}" if outcome.validate_s is not None else "–"
        lines.append(
            f"| {outcome.row} | {'yes' if outcome.loads else 'no'} | "
            f"{'yes' if outcome.same_roots else 'no'} | {seconds} |"
        )
    return "\n".join(lines)


def documented_rows(text: str) -> dict[str, tuple[str, str]]:
    """row -> (loads, same roots) as the matrix in ``text`` states them."""
    block = text[text.index(_BEGIN) : text.index(_END)]
    rows = {}
    for line in block.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("export path", "---"):
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def write_doc(outcomes: list[Outcome], path: Path = DOC) -> None:
    text = path.read_text()
    machine = f"{platform.machine()}, torch {torch.__version__}"
    table = f"{markdown(outcomes)}\n\nMeasured by `python -m tests.support.conformance --write` ({machine})."
    path.write_text(re.sub(f"{re.escape(_BEGIN)}.*{re.escape(_END)}", f"{_BEGIN}\n{table}\n{_END}", text, flags=re.S))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the matrix in docs/model-contract.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="fpf-conformance-"))
    try:
        rows = build_rows(root / "exports")
        (root / "service").mkdir()
        with start_service(root / "service") as service:
            outcomes = run_matrix(service, rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(markdown(outcomes))
    for outcome in outcomes:
        if outcome.detail:
            print(f"{outcome.row}: {outcome.detail}")
    if args.write:
        write_doc(outcomes)


if __name__ == "__main__":
    main()


__all__ = [
    "GROUPS",
    "Outcome",
    "Row",
    "build_rows",
    "compare",
    "documented_rows",
    "main",
    "markdown",
    "reference_roots",
    "run_matrix",
    "run_row",
]
