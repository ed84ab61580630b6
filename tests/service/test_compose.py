"""docker-compose.yml and the Dockerfiles, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema (the copy
vendored by the check-jsonschema package), and every command the containers run is
resolved in this environment: console scripts, their argument parsing, Celery subcommands,
the Celery app module, Dockerfile paths and build targets.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata, resources, util
from pathlib import Path

import jsonschema
import pytest
from packaging.requirements import Requirement
from ruamel.yaml import YAML

from service.ops.cli import build_parser, celery_worker_argv

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def _load_yaml(path: Path) -> dict:
    return YAML(typ="safe", pure=True).load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _our_services(compose: dict) -> dict[str, dict]:
    """Services built from this repository (the others run public images or reuse ours)."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def _dockerfile(build: dict) -> Path:
    return ROOT / build["context"] / build["dockerfile"]


def _dockerfile_cmd(path: Path, target: str | None = None) -> list[str]:
    """The exec-form CMD of a Dockerfile stage (the last CMD before the next FROM)."""
    cmd: list[str] | None = None
    stage: str | None = None
    for line in path.read_text().splitlines():
        if m := re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE):
            if cmd is not None and (target is None or stage == target):
                return cmd
            stage, cmd = m.group(1), None
        elif line.startswith("CMD "):
            cmd = json.loads(line[4:])
    assert cmd is not None and (target is None or stage == target), f"no CMD for stage {target} in {path}"
    return cmd


def _assert_command_resolves(argv: list[str]) -> None:
    """Fail unless ``argv`` would start: a known console script whose arguments parse."""
    scripts = {ep.name: ep for ep in metadata.entry_points(group="console_scripts")}
    program, *args = argv
    assert program in scripts, f"{program!r} is not a console script installed here"
    scripts[program].load()
    if program == "fpf-server":
        parsed = build_parser().parse_args(args)  # SystemExit (a test error) on unknown arguments
        if parsed.command == "worker":  # it execs `python -m celery ...`
            _assert_command_resolves(["celery", *celery_worker_argv("gpu", "w")[3:]])
    elif program == "celery":
        app = args[args.index("-A") + 1]
        module = app.split(":")[0]
        assert util.find_spec(module) is not None, f"Celery app module {module} does not exist"
        subcommand = next(a for a in args[args.index("-A") + 2 :] if not a.startswith("-"))
        help_run = subprocess.run(
            [sys.executable, "-m", "celery", subcommand, "--help"], capture_output=True, text=True, timeout=60
        )
        assert help_run.returncode == 0, f"celery has no {subcommand!r} command: {help_run.stderr[-500:]}"
    else:
        pytest.fail(f"no check written for {program!r}")


def test_compose_file_follows_the_compose_specification(compose, validator):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_schema_check_rejects_a_broken_compose_file(compose, validator):
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["ports"] = "8000:8000"  # must be a list
    broken["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["gpus"] = 1  # unknown key
    assert len(list(validator.iter_errors(broken))) >= 2


def test_services_share_one_data_volume_and_talk_to_the_compose_redis(compose):
    for name, svc in _our_services(compose).items():
        env = svc["environment"]
        assert env["FPF_REDIS_URL"].startswith("redis://redis:6379/"), name
        if name != "flower":
            assert f"fpf-data:{env['FPF_DATA_DIR']}" in svc["volumes"], name
    redis = compose["services"]["redis"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"


def test_key_store_is_mounted_where_requests_are_authenticated_and_never_in_workers(compose):
    for name, svc in compose["services"].items():
        if not svc.get("image", "").startswith("fpf-"):
            continue
        mounts_keys = any(volume.startswith("fpf-keys:") for volume in svc.get("volumes", []))
        if name in ("gateway", "grpc"):
            keys_dir = svc["environment"]["FPF_KEYS_FILE"].rsplit("/", 1)[0]
            assert f"fpf-keys:{keys_dir}" in svc["volumes"], name
        else:
            assert not mounts_keys and "FPF_KEYS_FILE" not in svc["environment"], name
    _assert_command_resolves(compose["services"]["grpc"]["command"])


def test_each_gpu_worker_reserves_its_own_gpu_and_node_name(compose):
    workers = {n: s for n, s in compose["services"].items() if s.get("image") == "fpf-worker:latest"}
    gpu_ids, node_names = [], []
    for name, svc in workers.items():
        node_names.append(svc["command"][svc["command"].index("--name") + 1])
        if "deploy" in svc:
            (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
            assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
            (gpu,) = device["device_ids"]
            gpu_ids.append(gpu)
            assert node_names[-1] == f"gpu{gpu}", name
        else:
            assert svc["profiles"] == ["cpu"], f"{name} has no GPU and must be opt-in"
    assert sorted(gpu_ids) == [str(i) for i in range(len(gpu_ids))]
    assert len(set(node_names)) == len(node_names)
    assert "profiles" not in compose["services"]["worker"], "the GPU 0 worker starts by default"


@pytest.mark.parametrize("service", ["gateway", "worker", "worker-gpu1", "worker-cpu", "flower"])
def test_every_container_command_resolves_here(compose, service):
    svc = compose["services"][service]
    _assert_command_resolves(svc["command"])
    _assert_command_resolves(_dockerfile_cmd(_dockerfile(svc["build"]), svc["build"].get("target")))


def test_build_files_exist_and_copy_only_what_the_context_allows(compose):
    for name, svc in _our_services(compose).items():
        dockerfile = _dockerfile(svc["build"])
        assert dockerfile.is_file(), name
        text = dockerfile.read_text()
        if target := svc["build"].get("target"):
            assert re.search(rf"^FROM\s+\S+\s+AS\s+{target}$", text, re.MULTILINE), f"{name}: no stage {target}"
        allowed = {
            line[1:].rstrip("/")
            for line in Path(f"{dockerfile}.dockerignore").read_text().splitlines()
            if line.startswith("!")
        }
        for line in re.findall(r"^COPY\s+(.+)$", text, re.MULTILINE):
            for source in line.split()[:-1]:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
                assert source.rstrip("/") in allowed, f"{dockerfile.name}: {source} is outside the build context"


def test_worker_command_is_the_documented_celery_worker():
    argv = celery_worker_argv("gpu", "gpu0")
    assert argv[argv.index("-A") + 1] == "workers.celery_app:app"
    assert " ".join(argv).endswith("worker -Q gpu --pool prefork --concurrency 1 -E -n gpu0@%h --loglevel info")


def test_worker_image_pins_torch():
    text = (ROOT / "docker/Dockerfile.worker").read_text()
    assert re.search(r"^RUN pip install torch==2\.13\.0$", text, re.MULTILINE)
    assert text.index("torch==2.13.0") < text.index('".[worker,'), "torch must be installed before the rest"
    assert "apt-get install -y --no-install-recommends bubblewrap" in text, "workers need bwrap for the sandbox"


def _install_set(pip_args: list[str]) -> set[str]:
    """Names of the direct requirements ``pip install ARGS`` pulls from this repository's distributions."""
    names: set[str] = set()
    for arg in pip_args:
        match = re.fullmatch(r"\.?/?(client)?/?(?:\[([\w,]+)\])?", arg.strip("\"'"))
        assert match, f"unexpected pip argument {arg}"
        project = tomllib.loads((ROOT / (match.group(1) or ".") / "pyproject.toml").read_text())["project"]
        requirements = list(project["dependencies"])
        for extra in filter(None, (match.group(2) or "").split(",")):
            requirements += project["optional-dependencies"].get(extra, [])
        names |= {Requirement(r).name for r in requirements}
    return names


def test_gateway_image_installs_no_torch():
    text = (ROOT / "docker/Dockerfile.gateway").read_text()
    gateway_stage = text.split("FROM gateway AS flower")[0]
    (install,) = re.findall(r"^RUN pip install (.+)$", gateway_stage, re.MULTILINE)
    assert "torch" not in _install_set(install.split())
