"""The bubblewrap command line of a sandboxed child, and the limits it runs under.

The child sees a read-only view of what it needs to import the engine (the system's
``/usr``, the Python installation, the virtualenv and the fpf packages), a private
``/tmp`` and ``/dev/shm`` of bounded size, a fresh ``/proc`` of its own PID namespace,
a minimal ``/dev`` (plus the NVIDIA devices when present), and nothing else: no data
directory, no network, no host processes, an environment of a few fixed variables.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fpf_client
import workers

#: The unprivileged user and group the child runs as inside its user namespace ("nobody").
SANDBOX_UID = 65534
#: Environment variables copied from the worker into the child when set (thread counts, GPU choice).
PASSED_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
#: Files of /etc the dynamic loader and Python read; the rest of /etc is not visible.
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime")


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces on this host."""


@dataclass(frozen=True)
class Limits:
    """What one child may use.

    Attributes
    ----------
    memory_bytes : private writable memory (``RLIMIT_DATA``: heap and anonymous maps; unlike
        ``RLIMIT_AS`` it leaves room for CUDA's address-space reservations).
    cpu_s : CPU seconds (all threads) one job may use; enforced by the worker, which kills the child.
    disk_bytes : size of the child's ``/tmp`` and ``/dev/shm`` each, and its largest file (``RLIMIT_FSIZE``).
    open_files : file descriptors (``RLIMIT_NOFILE``).
    """

    memory_bytes: int
    cpu_s: float
    disk_bytes: int
    open_files: int = 1024


def find_bwrap() -> str:
    """The path of the bwrap executable.

    Raises
    ------
    SandboxUnavailable
        When it is not on ``PATH``.
    """
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed: apt-get install -y bubblewrap")
    return path


def probe(bwrap: str | None = None) -> str:
    """Check that bwrap can build a sandbox here; returns its version line.

    Raises
    ------
    SandboxUnavailable
        When bwrap is missing or fails (no user namespaces, a seccomp profile forbidding them, ...).
    """
    bwrap = bwrap or find_bwrap()
    check = subprocess.run(
        [bwrap, *_namespaces(), *_filesystem(), *_code(), "--", "/bin/true"],
        env={},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if check.returncode != 0:
        raise SandboxUnavailable(f"bwrap cannot create a sandbox here: {check.stderr.strip()}")
    return subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def sandbox_argv(limits: Limits, *, data_dir: Path, info_fd: int | None = None, bwrap: str | None = None) -> list[str]:
    """bwrap and its options, up to and including ``--``: the walls, without the command inside them.

    ``data_dir`` is hidden behind an empty tmpfs should it lie inside a bound directory.
    With ``info_fd``, bwrap writes the host PID of the sandbox's init process there, as JSON.
    """
    hidden = [arg for d in _hidden(data_dir) for arg in ("--tmpfs", d)]
    info = ["--info-fd", str(info_fd)] if info_fd is not None else []
    # The code binds come after the private /tmp, so that a checkout or virtualenv under /tmp
    # stays visible; the data dir's cover comes last, over whatever bind holds it.
    return [
        bwrap or find_bwrap(),
        *_namespaces(),
        *_filesystem(),
        *_tmpfs(limits.disk_bytes),
        *_code(),
        *_gpu_devices(),
        *hidden,
        *_environment(),
        *info,
        "--chdir",
        "/tmp",
        "--",
    ]


def spawn(
    command: list[str],
    limits: Limits,
    *,
    data_dir: Path,
    info_fd: int | None = None,
    bwrap: str | None = None,
    **popen: Any,
) -> subprocess.Popen:
    """Start ``command`` in a sandbox; ``popen`` are further :class:`subprocess.Popen` arguments.

    bwrap itself gets an empty environment: the sandbox's init process (PID 1 inside,
    readable there as /proc/1/environ) keeps bwrap's environment, not the child's.
    """
    argv = [*sandbox_argv(limits, data_dir=data_dir, info_fd=info_fd, bwrap=bwrap), *command]
    return subprocess.Popen(argv, env={}, pass_fds=() if info_fd is None else (info_fd,), **popen)


def child_command(limits: Limits) -> list[str]:
    """The command, run inside the sandbox, of :mod:`workers.sandbox.child` under ``limits``."""
    return [
        sys.executable,
        "-I",
        "-B",
        "-m",
        "workers.sandbox.child",
        "--memory-bytes",
        str(limits.memory_bytes),
        "--disk-bytes",
        str(limits.disk_bytes),
        "--open-files",
        str(limits.open_files),
    ]


def bound_directories() -> list[str]:
    """Host directories the child sees (read-only): Python, the virtualenv and the fpf packages."""
    packages = [Path(workers.__file__).parent, Path(fpf_client.__file__).parent]
    found = {sys.base_prefix, sys.prefix, *(str(p.resolve()) for p in packages)}
    return sorted(d for d in found if not d.startswith("/usr/") and d != "/usr")


def _namespaces() -> list[str]:
    return [
        "--unshare-all",
        "--unshare-user",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--hostname",
        "fpf-sandbox",
        "--die-with-parent",
        "--new-session",
    ]


def _filesystem() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("lib", "lib64", "bin", "sbin"):
        target = os.readlink(f"/{name}") if os.path.islink(f"/{name}") else None
        if target is not None:
            args += ["--symlink", target, f"/{name}"]
        elif os.path.isdir(f"/{name}"):
            args += ["--ro-bind", f"/{name}", f"/{name}"]
    args += [arg for f in ETC_FILES if os.path.exists(f) for arg in ("--ro-bind", f, f)]
    return [*args, "--proc", "/proc", "--dev", "/dev"]


def _code() -> list[str]:
    """Read-only binds of :func:`bound_directories`."""
    return [arg for d in bound_directories() for arg in ("--ro-bind", d, d)]


def _tmpfs(size: int) -> list[str]:
    return ["--size", str(size), "--tmpfs", "/tmp", "--size", str(size), "--tmpfs", "/dev/shm"]


def _gpu_devices() -> list[str]:
    """``--dev-bind`` of every NVIDIA device node (nvidia0.., nvidiactl, nvidia-uvm, ...) present."""
    return [arg for node in sorted(glob.glob("/dev/nvidia*")) for arg in ("--dev-bind", node, node)]


def _hidden(data_dir: Path) -> list[str]:
    """``data_dir`` when a bound directory contains it (so that it must be covered), else nothing."""
    data = str(Path(data_dir).resolve())
    return (
        [data] if any(data == d or data.startswith(d.rstrip("/") + "/") for d in [*bound_directories(), "/usr"]) else []
    )


def _environment() -> list[str]:
    fixed = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "TF_CPP_MIN_LOG_LEVEL": "2"}
    passed = {name: os.environ[name] for name in PASSED_VARIABLES if name in os.environ}
    return ["--clearenv", *(arg for k, v in {**fixed, **passed}.items() for arg in ("--setenv", k, v))]
