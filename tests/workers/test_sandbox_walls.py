"""The sandbox's walls, tested with the strongest attacker: arbitrary Python (and a TensorFlow
SavedModel loaded without fpf's op allow-list) running inside the same bubblewrap command a
worker's child runs in (:func:`workers.sandbox.spawn`).

Each test plants secrets where a worker can read them (a data directory with another
tenant's artifact, a key store, an environment variable of the worker) and checks, from
outside, what the code inside got and left. Controls run the same code unconfined and show
that it does get the secret, so that the tests can fail.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from workers.sandbox import Limits, spawn

pytestmark = pytest.mark.integration

LIMITS = Limits(memory_bytes=2 << 30, cpu_s=60, disk_bytes=64 << 20, open_files=256)

#: Runs inside the sandbox: try every listed read and write, then report as JSON on stdout.
PROBE = r"""
import json, os, resource, socket, sys
from workers.sandbox.child import limit_resources

spec = json.loads(sys.argv[1])
if spec["limits"]:
    limit_resources(spec["memory_bytes"], spec["disk_bytes"], spec["open_files"])
def text(path):
    try:
        return open(path, "rb").read().decode(errors="replace")
    except OSError as exc:
        return str(exc)

report = {"uid": os.getuid(), "environ": text("/proc/self/environ"), "init_environ": text("/proc/1/environ"),
          "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), "attempts": {},
          "limits": {name: resource.getrlimit(getattr(resource, name)) for name in ("RLIMIT_DATA", "RLIMIT_FSIZE")}}

def write(path, data):
    with open(path, "wb") as out:  # closed here, so that a failed flush is reported too
        return out.write(data)

def attempt(name, action):
    try:
        report["attempts"][name] = ["ok", repr(action())[:4000]]
    except BaseException as exc:
        report["attempts"][name] = ["refused", f"{type(exc).__name__}: {exc}"]

for path in spec["read"]:
    attempt("read " + path, lambda p=path: open(p, "rb").read())
for path in spec["write"]:
    attempt("write " + path, lambda p=path: write(p, b"escaped"))
attempt("connect to redis", lambda: socket.create_connection(("127.0.0.1", 6379), timeout=2))
attempt("resolve a name", lambda: socket.getaddrinfo("pypi.org", 443))
if spec["limits"]:
    attempt("raise the memory limit", lambda: resource.setrlimit(resource.RLIMIT_DATA, (-1, -1)))
    attempt("allocate past the memory limit", lambda: len(bytearray(spec["memory_bytes"] + (256 << 20))))
    attempt("write in /tmp", lambda: write("/tmp/inside", b"private"))
    attempt("write past the file-size limit", lambda: write("/tmp/big", bytes(spec["disk_bytes"] + 1)))
print(json.dumps(report))
"""

#: Runs inside the sandbox: load the SavedModel on stdin (tar.gz) with TensorFlow itself, no
#: allow-list, and let its functions read and write the listed paths.
SAVEDMODEL_PROBE = r"""
import io, json, sys, tarfile
import tensorflow as tf

spec = json.loads(sys.argv[1])
with tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read())) as archive:
    archive.extractall("/tmp/upload", filter="data")
model = tf.saved_model.load("/tmp/upload/hostile")
report = {}
for path in spec["read"]:
    try:
        report["read " + path] = ["ok", model.read(tf.constant(path)).numpy().decode(errors="replace")]
    except Exception as exc:
        report["read " + path] = ["refused", type(exc).__name__]
for path in spec["write"]:
    try:
        model.write(tf.constant(path))
        report["write " + path] = ["ok", ""]
    except Exception as exc:
        report["write " + path] = ["refused", type(exc).__name__]
print(json.dumps(report))
"""


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Secrets a worker could reach: another tenant's model file and a key store in a data directory
    laid out as ``fpf-server up`` does, and an environment variable of the worker process."""
    secret = secrets.token_hex(16)
    root = tmp_path / "server"
    data = root / "data"
    (data / "models").mkdir(parents=True)
    artifact = data / "models" / ("ab" * 32)
    artifact.write_text(f"other tenant's model {secret}")
    keys = root / "keys.json"
    keys.write_text(json.dumps({"keys": [{"hash": secret}]}))
    monkeypatch.setenv("FPF_PLANTED_SECRET", secret)
    return {
        "secret": secret,
        "data_dir": data,
        "read": [str(artifact), str(keys)],
        "write": [
            str(data / "escaped"),
            str(tmp_path / "escaped"),
            str(Path(sys.prefix) / "escaped"),
            str(Path(__file__).resolve().parents[2] / "workers" / "escaped"),
        ],
    }


def run_inside(probe: str, planted: dict[str, Any], stdin: bytes = b"", timeout_s: float = 120) -> dict[str, Any]:
    spec = {
        "read": planted["read"],
        "write": planted["write"],
        "limits": True,
        "memory_bytes": LIMITS.memory_bytes,
        "disk_bytes": LIMITS.disk_bytes,
        "open_files": LIMITS.open_files,
    }
    process = spawn(
        [sys.executable, "-I", "-c", probe, json.dumps(spec)],
        LIMITS,
        data_dir=planted["data_dir"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = process.communicate(stdin, timeout=timeout_s)
    assert process.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


def assert_nothing_escaped(planted: dict[str, Any]) -> None:
    for path in planted["write"]:
        assert not Path(path).exists(), f"{path} was written from inside the sandbox"


def test_arbitrary_code_reads_no_secret_writes_nothing_and_reaches_no_network(planted):
    report = run_inside(PROBE, planted)

    assert planted["secret"] not in json.dumps(report)
    for path in planted["read"]:
        assert report["attempts"][f"read {path}"][0] == "refused"
    for path in planted["write"]:
        assert report["attempts"][f"write {path}"][0] == "refused"
    assert_nothing_escaped(planted)
    assert report["attempts"]["connect to redis"][0] == "refused"
    assert report["attempts"]["resolve a name"][0] == "refused"
    assert report["uid"] == 65534
    assert report["pids"] == [1, 2]  # its own PID namespace: bwrap's init and the probe
    assert "FPF_" not in report["environ"] + report["init_environ"]


def test_limits_hold_and_cannot_be_raised(planted):
    report = run_inside(PROBE, planted)
    attempts = report["attempts"]

    assert report["limits"] == {"RLIMIT_DATA": [LIMITS.memory_bytes] * 2, "RLIMIT_FSIZE": [LIMITS.disk_bytes] * 2}
    assert attempts["raise the memory limit"][0] == "refused"
    assert attempts["allocate past the memory limit"] == ["refused", "MemoryError: "]
    assert attempts["write in /tmp"] == ["ok", "7"]
    # The file-size limit and the size of /tmp are the same: whichever is hit first refuses.
    assert attempts["write past the file-size limit"][0] == "refused"


def test_control_the_same_code_unconfined_gets_the_secrets(planted):
    """Without the sandbox the probe reads every planted file: the tests above can fail."""
    spec = {"read": planted["read"], "write": [], "limits": False}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(spec)], capture_output=True, env=os.environ, check=False
    )
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    report = json.loads(out.stdout.decode().strip().splitlines()[-1])
    for path in planted["read"]:
        assert planted["secret"] in report["attempts"][f"read {path}"][1]
    assert planted["secret"] in report["environ"]


@pytest.fixture(scope="module")
def hostile_savedmodel(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A SavedModel whose functions read any file (tf.io.read_file) and write one (tf.io.write_file),
    as a tar.gz upload; fpf's loader refuses these ops, TensorFlow itself does not."""
    tf = pytest.importorskip("tensorflow")

    class Hostile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def read(self, path):
            return tf.io.read_file(path)

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def write(self, path):
            tf.io.write_file(path, "escaped")
            return tf.constant(0)

    root = tmp_path_factory.mktemp("savedmodel")
    tf.saved_model.save(Hostile(), str(root / "hostile"))
    with tarfile.open(root / "hostile.tar.gz", "w:gz") as archive:
        archive.add(root / "hostile", arcname="hostile")
    return (root / "hostile.tar.gz").read_bytes()


def test_a_savedmodel_without_the_allow_list_reads_and_writes_nothing(planted, hostile_savedmodel):
    planted = {**planted, "read": [*planted["read"], "/proc/self/environ", "/proc/1/environ"]}
    report = run_inside(SAVEDMODEL_PROBE, planted, stdin=hostile_savedmodel)

    assert planted["secret"] not in json.dumps(report)
    for path in planted["read"][:2]:
        assert report[f"read {path}"] == ["refused", "NotFoundError"]
    for path in planted["write"]:
        # tf.io.write_file makes missing directories: under /tmp it writes into the sandbox's own tmpfs.
        assert report[f"write {path}"][0] == "refused" or path.startswith("/tmp/"), path
    assert_nothing_escaped(planted)


def test_control_the_savedmodel_unconfined_reads_and_writes(planted, hostile_savedmodel, tmp_path):
    import tensorflow as tf

    with tarfile.open(fileobj=__import__("io").BytesIO(hostile_savedmodel)) as archive:
        archive.extractall(tmp_path / "upload", filter="data")
    model = tf.saved_model.load(str(tmp_path / "upload" / "hostile"))

    assert planted["secret"] in model.read(tf.constant(planted["read"][1])).numpy().decode()
    model.write(tf.constant(str(tmp_path / "escaped")))
    assert (tmp_path / "escaped").read_text() == "escaped"


def test_a_data_directory_inside_a_bound_directory_is_covered(planted):
    """Should FPF_DATA_DIR lie inside the virtualenv (bound read-only), the sandbox still sees it empty."""
    data = Path(sys.prefix) / f"fpf-test-data-{secrets.token_hex(4)}"
    (data / "models").mkdir(parents=True)
    try:
        artifact = data / "models" / "victim"
        artifact.write_text(planted["secret"])
        report = run_inside(PROBE, {**planted, "data_dir": data, "read": [str(artifact)], "write": []})
    finally:
        shutil.rmtree(data)
    assert report["attempts"][f"read {artifact}"][0] == "refused"
    assert planted["secret"] not in json.dumps(report)


def test_code_under_tmp_stays_visible_behind_the_private_tmp(tmp_path: Path, monkeypatch) -> None:
    """A checkout or virtualenv under /tmp (as in a CI clone) is bound over the sandbox's own /tmp."""
    from workers.sandbox import command

    code = tmp_path / "checkout"
    code.mkdir()
    (code / "marker.txt").write_text("visible")
    assert str(code).startswith("/tmp/")
    bound = command.bound_directories()
    monkeypatch.setattr(command, "bound_directories", lambda: [*bound, str(code)])
    inside = spawn(
        ["/bin/cat", str(code / "marker.txt")],
        LIMITS,
        data_dir=tmp_path / "data",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = inside.communicate(timeout=60)
    assert (inside.returncode, out) == (0, b"visible"), err
