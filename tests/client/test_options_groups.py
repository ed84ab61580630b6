"""Per-method option groups: they validate, the flat names of earlier versions map onto them with a
DeprecationWarning, and the JSON schema (REST's OpenAPI) marks those names deprecated."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from fpf_client.compat import FixedPointFinder
from fpf_client.errors import InvalidOptions
from fpf_client.options import DEPRECATED_OPTIONS, AdamOptions, FinderOptions
from fpf_client.payloads import options_payload

#: One non-default value per deprecated flat name.
FLAT_VALUES: dict[str, Any] = {
    "lr_init": 0.1,
    "lr_factor": 0.5,
    "lr_patience": 3,
    "lr_cooldown": 2,
    "adam_hps": {"epsilon": 0.01},
    "alr_hps": {"n_warmup_steps": 4},
    "agnc_hps": {"percentile": 90.0},
}


def test_every_deprecated_name_has_a_test_value() -> None:
    assert FLAT_VALUES.keys() == DEPRECATED_OPTIONS.keys()


@pytest.mark.parametrize(
    "group",
    [
        {"lm": {"warm_start_iters": -1}},
        {"lm": {"lambda_init": 0}},
        {"lm_krylov": {"cg_iters": 0}},
        {"lm_krylov": {"cg_rtol": 1.0}},
        {"lm_krylov": {"warm_start_iters": -5}},
        {"newton_krylov": {"gmres_restart": 0}},
        {"newton_krylov": {"gmres_max_restarts": -1}},
        {"anderson": {"memory": 0}},
        {"adam": {"lr_factor": 1.0}},
        {"adam": {"hps": {"beta1": 1.0}}},
    ],
)
def test_groups_check_their_bounds(group: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FinderOptions(**group)


@pytest.mark.parametrize("group", ["adam", "lm", "lm_krylov", "newton_krylov", "anderson"])
def test_an_unknown_key_inside_a_group_is_an_error(group: str) -> None:
    with pytest.raises(ValidationError, match=rf"{group}\.warm_start\b"):
        FinderOptions(**{group: {"warm_start": 3}})
    with pytest.raises(InvalidOptions, match=rf"unknown option '{group}\.warm_start'"):
        options_payload({group: {"warm_start": 3}})


def test_groups_are_frozen_and_another_methods_group_is_allowed() -> None:
    options = FinderOptions(method="lm", adam={"lr_init": 0.5}, anderson={"memory": 2})
    assert options.adam.lr_init == 0.5 and options.anderson.memory == 2
    with pytest.raises(ValidationError):
        options.adam.lr_init = 0.1  # type: ignore[misc]


@pytest.mark.parametrize("flat", sorted(FLAT_VALUES))
def test_a_flat_name_maps_into_its_group_with_a_deprecation_warning(flat: str) -> None:
    group, field = DEPRECATED_OPTIONS[flat]
    with pytest.warns(DeprecationWarning, match=rf"'{flat}' is now {group}\.{field}"):
        old = FinderOptions(**{flat: FLAT_VALUES[flat]})
    new = FinderOptions(**{group: {field: FLAT_VALUES[flat]}})
    assert old == new and old != FinderOptions()
    with pytest.warns(DeprecationWarning, match=rf"'{flat}' is now {group}\.{field}"):
        assert getattr(old, flat) == getattr(new.adam, field)  # reading the old name too


def test_the_same_value_under_both_names_is_accepted_different_values_are_an_error() -> None:
    with pytest.warns(DeprecationWarning):
        same = FinderOptions(lr_init=0.1, adam={"lr_init": 0.1, "lr_factor": 0.5})
    assert same.adam == AdamOptions(lr_init=0.1, lr_factor=0.5)
    with pytest.warns(DeprecationWarning):  # a group given as a model, the nested value as a dict
        assert FinderOptions(adam_hps={"epsilon": 0.01}, adam=AdamOptions(hps={"epsilon": 0.01})) == FinderOptions(
            adam={"hps": {"epsilon": 0.01}}
        )
    with pytest.warns(DeprecationWarning), pytest.raises(ValidationError, match="lr_init .* adam.lr_init differ"):
        FinderOptions(lr_init=0.1, adam={"lr_init": 0.2})
    with pytest.warns(DeprecationWarning), pytest.raises(InvalidOptions, match="adam_hps .* adam.hps differ"):
        options_payload({"adam_hps": {"epsilon": 0.01}, "adam": {"hps": {"epsilon": 0.1}}})


def test_a_bad_flat_value_is_reported_as_in_its_group() -> None:
    with pytest.warns(DeprecationWarning), pytest.raises(ValidationError, match=r"adam\.lr_init"):
        FinderOptions(lr_init=-1.0)


def test_what_the_client_sends_is_the_grouped_form_of_what_was_set() -> None:
    with pytest.warns(DeprecationWarning):
        sent = options_payload({"method": "adam", "lr_init": 0.1, "agnc_hps": {"percentile": 90.0}})
    assert sent == {"method": "adam", "adam": {"lr_init": 0.1, "agnc_hps": {"percentile": 90.0}}}
    assert options_payload({"lm": {"warm_start_iters": 2}}) == {"lm": {"warm_start_iters": 2}}
    # a record (JSON) of either form reads back as the same options, as older job records do
    assert FinderOptions.model_validate_json(FinderOptions(**sent).model_dump_json()) == FinderOptions(**sent)


def test_the_json_schema_marks_the_flat_names_deprecated() -> None:
    schema = FinderOptions.model_json_schema()
    properties = schema["properties"]
    for flat, (group, field) in DEPRECATED_OPTIONS.items():
        assert properties[flat]["deprecated"] is True and f"{group}.{field}" in properties[flat]["description"]
        assert "deprecated" not in properties[group]
    assert properties["lr_init"]["exclusiveMinimum"] == 0  # the group's bounds
    assert properties["adam_hps"]["$ref"] == properties["adam"]["$ref"].replace("AdamOptions", "AdamHps")
    assert schema["$defs"]["LmKrylovOptions"]["additionalProperties"] is False


def test_compat_takes_the_reference_names_without_warnings() -> None:
    reference = {"lr_init": 0.5, "lr_patience": 2, "adam_hps": {"epsilon": 0.01}, "alr_hps": {}, "agnc_hps": None}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".* is now adam", category=DeprecationWarning)
        finder = FixedPointFinder(np.eye(2), method="joint", verbose=False, **reference)
    assert finder.options.adam == AdamOptions(lr_init=0.5, lr_patience=2, hps={"epsilon": 0.01}, alr_hps={})
    assert finder.lr_init == 0.5  # the reference keeps each hyperparameter as an attribute
    with pytest.raises(InvalidOptions, match="lr_init .* adam.lr_init differ"):
        FixedPointFinder(np.eye(2), lr_init=0.5, adam={"lr_init": 0.1}, verbose=False)
