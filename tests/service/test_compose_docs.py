"""docs/operations.md stays true: every setting with its default, valid compose snippets, real CLI flags."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from service.core.settings import Settings
from service.ops.cli import build_parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _documented_settings() -> dict[str, str]:
    """``FPF_NAME -> default`` from the settings table (the default column, backticks removed)."""
    rows = re.findall(r"^\| `(FPF_\w+)` \| ([^|]+) \|", DOC.read_text(), re.MULTILINE)
    return {name: default.strip().strip("`") for name, default in rows}


def _as_documented(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented_with_its_default(name):
    documented = _documented_settings()
    env = f"FPF_{name.upper()}"
    assert env in documented, f"{env} is missing from docs/operations.md"
    assert documented[env] == _as_documented(Settings.model_fields[name].default)


def test_no_documented_setting_is_unknown():
    known = {f"FPF_{name.upper()}" for name in Settings.model_fields}
    assert set(_documented_settings()) <= known


def test_compose_snippets_in_the_guide_are_valid_compose_files():
    schema = json.loads((resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    snippets = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert snippets
    for snippet in snippets:
        document = YAML(typ="safe", pure=True).load(snippet)
        assert [e.message for e in validator.iter_errors(document)] == []


def test_the_up_command_line_in_the_guide_parses():
    (line,) = re.findall(r"^fpf-server up (.+)$", DOC.read_text(), re.MULTILINE)
    flags = re.findall(r"\[(--[\w-]+) ([^\]]+)\]", line)
    args = build_parser().parse_args(["up", *[part for flag in flags for part in flag]])
    assert args.port == 8000 and args.workers == 1 and args.host == "127.0.0.1"
