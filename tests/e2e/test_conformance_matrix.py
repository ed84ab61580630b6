"""The conformance matrix through the real service: every real export loads, validates and gives the
roots of a TorchScript step of the same weights; docs/model-contract.md lists exactly these rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from service_harness import LiveService

from tests.support import conformance

pytestmark = pytest.mark.integration
pytest.importorskip("tensorflow")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def outcomes(live_service: LiveService, tmp_path_factory: pytest.TempPathFactory) -> dict[str, conformance.Outcome]:
    """Every row exported once, uploaded and solved through the session's service."""
    rows = conformance.build_rows(Path(tmp_path_factory.mktemp("conformance")))
    return {outcome.row: outcome for outcome in conformance.run_matrix(live_service, rows)}


def test_every_export_loads_and_gives_the_reference_roots(outcomes: dict[str, conformance.Outcome]) -> None:
    failed = {name: outcome.detail for name, outcome in outcomes.items() if not (outcome.loads and outcome.same_roots)}
    assert not failed, failed
    groups = {name.split(" ")[0] for name in outcomes}
    assert {"torch.export", "ONNX", "TorchScript"} <= groups and any(name.startswith("keras-") for name in outcomes)


def test_the_documented_matrix_lists_the_rows_the_tests_run(outcomes: dict[str, conformance.Outcome]) -> None:
    documented = conformance.documented_rows(conformance.DOC.read_text())
    assert documented == {name: ("yes", "yes") for name in outcomes}, (
        "docs/model-contract.md is out of date: run python -m tests.support.conformance --write"
    )


def test_the_comparison_can_fail() -> None:
    """compare() tells apart other roots, moved roots and other stability (the matrix's 'same roots'), and
    leaves out points the engine flags as not isolated."""
    import numpy as np

    from fpf_client import FixedPoints

    def roots(xstar: list[list[float]], stable: list[bool], nonisolated: list[bool] | None = None) -> FixedPoints:
        flags = None if nonisolated is None else np.asarray(nonisolated)
        return FixedPoints(xstar=np.asarray(xstar, np.float32), is_stable=np.asarray(stable), is_nonisolated=flags)

    reference = roots([[0.0, 0.0], [1.0, 1.0]], [True, False])
    assert conformance.compare(roots([[1.0, 1.0], [0.0, 0.0]], [False, True]), reference) == ""
    assert "1 isolated fixed points" in conformance.compare(roots([[0.0, 0.0]], [True]), reference)
    assert "differ" in conformance.compare(roots([[0.0, 0.0], [1.0, 1.0 + 1e-4]], [True, False]), reference)
    assert "stability" in conformance.compare(roots([[0.0, 0.0], [1.0, 1.0]], [True, True]), reference)
    drifting = roots([[0.0, 0.0], [1.0, 5.0]], [True, True], [False, True])
    assert conformance.compare(drifting, roots([[0.0, 0.0], [1.0, 7.0]], [True, True], [False, True])) == ""
    assert "no isolated" in conformance.compare(drifting, roots([[1.0, 7.0]], [True], [True]))
