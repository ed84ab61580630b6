"""The typed search record behind ``FixedPoints.info``: the keys users, the service and the web page read."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from test_solvers import Tanh, grid, roll_weights

from fpf_client.fixed_points import FixedPoints
from workers.engine import find_fixed_points
from workers.engine.pipeline.info import SearchInfo

#: docs/engine.md, "info and the discovery curve", in the order results have always listed them.
DOCUMENTED_KEYS = [
    "discovery_curve",
    "n_fixed_points",
    "n_certified",
    "n_samples",
    "n_converged",
    "n_stalled",
    "n_capped",
    "n_stalled_at_rounding_floor",
    "n_refined_in_float64",
    "warnings",
    "n_restarts",
    "n_restarts_converged",
    "completeness_passes",
    "method",
    "partial",
    "partial_reason",
    "iterations",
    "device",
    "dtype",
    "wall_time_s",
]


def test_the_record_has_the_documented_keys_in_order():
    assert [f.name for f in dataclasses.fields(SearchInfo)] == DOCUMENTED_KEYS


def test_info_is_the_record_and_survives_json_and_npz():
    fps = find_fixed_points(Tanh(roll_weights(3)), grid(3), dtype="float64", device="cpu")
    assert list(fps.info) == DOCUMENTED_KEYS
    record = SearchInfo(**fps.info)
    assert record.n_fixed_points == fps.n == 3 and record.n_samples == len(grid(3))
    assert record.method == "lm" and record.partial is False and record.partial_reason is None
    for loaded in (
        FixedPoints.load(fps.to_npz_bytes()),
        FixedPoints.from_json_dict(json.loads(json.dumps(fps.to_json_dict()))),
    ):
        assert list(loaded.info) == DOCUMENTED_KEYS
        assert loaded.info == record.as_dict()
        assert loaded.info["discovery_curve"]["n_certified_roots"][-1] == int(np.sum(fps.certified))
