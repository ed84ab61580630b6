"""The ``fpf`` command line: upload models, run and follow jobs, fetch results.

Each subcommand is a function registered with :func:`command`, so adding one (``fpf demo``)
is one decorated function. Errors are printed as one line with their code; the exit status
is 1 for a service or file error, 2 for a usage error, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .client import Client
from .demo import CELLS, run_demo
from .errors import FpfError, ServiceUnavailable
from .fixed_points import FixedPoints
from .retry import RetryPolicy

RESULT_SUFFIXES = (".npz", ".json")


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, argparse arguments and the function that runs it."""

    name: str
    help: str
    arguments: tuple[tuple[tuple[str, ...], dict[str, Any]], ...]
    run: Callable[[Client, argparse.Namespace], None]


COMMANDS: dict[str, Command] = {}


def arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One ``add_argument`` call, as data."""
    return flags, kwargs


Run = Callable[[Client, argparse.Namespace], None]


def command(name: str, help: str, *arguments: tuple[tuple[str, ...], dict[str, Any]]) -> Callable[[Run], Run]:
    """Register the decorated ``run(client, args)`` as the subcommand ``name``."""

    def register(run: Run) -> Run:
        COMMANDS[name] = Command(name, help, arguments, run)
        return run

    return register


# --- argument types ------------------------------------------------------------------------
def option_pair(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as JSON when it is JSON (``1e-10``, ``true``, ``null``), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def job_options(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Options from ``--option`` pairs; ``group.field`` keys (``lm_krylov.cg_iters``) go into their group."""
    options: dict[str, Any] = {}
    for key, value in pairs:
        group, dot, field = key.partition(".")
        if dot:
            options.setdefault(group, {})[field] = value
        else:
            options[key] = value
    return options


def result_path(text: str) -> Path:
    """An output file whose suffix says the format."""
    path = Path(text)
    if path.suffix.lower() not in RESULT_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text}: the result file must end in .npz or .json")
    return path


def load_array(path: str) -> np.ndarray:
    """A ``.npy`` file, read without pickles."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise argparse.ArgumentTypeError(f"{path}: expected one array in a .npy file, not an .npz archive")
    return array


def write_result(fixed_points: FixedPoints, path: Path) -> None:
    """Save as ``.npz`` or as strict JSON, by the file's suffix."""
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(fixed_points.to_json_dict(), allow_nan=False))
    else:
        fixed_points.save(path)


def _finish(fixed_points: FixedPoints, output: Path | None) -> None:
    print(fixed_points.summary())
    if output is not None:
        write_result(fixed_points, output)
        print(f"saved to {output}", file=sys.stderr)


# --- subcommands -----------------------------------------------------------------------------
@command(
    "upload",
    "upload a model file and wait until the service has validated it",
    arg("model", help="the model: a TorchScript or ONNX file, a SavedModel .zip/.tar.gz or directory"),
    arg("--n-states", type=int, help="number of state units (checked by a dry run)"),
    arg("--n-inputs", type=int, help="number of inputs (checked by a dry run)"),
    arg(
        "--format",
        choices=("torchscript", "torch_export", "onnx", "savedmodel"),
        help="model format (detected when absent)",
    ),
    arg("--dynamics", choices=("discrete", "continuous"), help="discrete map or continuous vector field"),
    arg("--signature", help="SavedModel signature to run (serving_default when absent)"),
    arg("--input-name", help="ONNX/SavedModel input that is u, when fpf cannot tell by name"),
    arg("--state-name", help="ONNX/SavedModel input that is the state h"),
    arg("--output-name", help="ONNX/SavedModel output that is the next state"),
)
def upload(client: Client, args: argparse.Namespace) -> None:
    model = client.upload_model(
        args.model,
        format=args.format,
        n_states=args.n_states,
        n_inputs=args.n_inputs,
        dynamics=args.dynamics,
        signature=args.signature,
        input_name=args.input_name,
        state_name=args.state_name,
        output_name=args.output_name,
    )
    print(f"{model.id}\t{model.status}\tn_states={model.n_states}\tn_inputs={model.n_inputs}\t{model.filename}")


@command(
    "run",
    "find fixed points: submit a job, follow it and print the summary",
    arg("model", help="a model file (uploaded first) or a model id"),
    arg("--states", required=True, type=load_array, help="initial states, (n, n_states) .npy"),
    arg("--inputs", type=load_array, help="inputs, (1 | n, n_inputs) .npy; zeros when absent"),
    arg(
        "--option",
        action="append",
        type=option_pair,
        default=[],
        metavar="KEY=VALUE",
        help="a FinderOptions field, e.g. --option method=adam --option tol_q=1e-10, or a method's own, "
        "e.g. --option adam.lr_init=0.1 (repeatable)",
    ),
    arg("-o", "--output", type=result_path, help="save the result as .npz or .json"),
    arg("--timeout", type=float, help="give up waiting after this many seconds"),
    arg("--no-progress", action="store_true", help="do not draw a progress bar"),
)
def run(client: Client, args: argparse.Namespace) -> None:
    job = client.submit(args.model, args.states, args.inputs, **job_options(args.option))
    print(f"job {job.id} {job.record.status}", file=sys.stderr)
    job.wait(progress=not args.no_progress, timeout=args.timeout)
    _finish(job.result(), args.output)


@command("status", "show a job", arg("job", help="the job id"))
def status(client: Client, args: argparse.Namespace) -> None:
    record = client.get_job(args.job).record
    print(f"job {record.id}: {record.status}")
    print(f"  model {record.model_id}, {record.n_initial_states} initial states, attempts {record.attempts}")
    if record.progress is not None:
        progress = record.progress
        print(
            f"  {progress.phase} iteration {progress.iteration}: {progress.n_converged} of {progress.n_total}"
            f" converged, q median {progress.q_median}, q max {progress.q_max}"
        )
    if record.timings is not None:
        print(
            f"  queued {record.timings.queued_s} s, engine {record.timings.engine_s} s,"
            f" total {record.timings.total_s} s"
        )
    if record.error:
        print(f"  error [{record.error.get('code')}] {record.error.get('detail')}")


@command(
    "result",
    "fetch a finished job's fixed points",
    arg("job", help="the job id"),
    arg("-o", "--output", type=result_path, help="save the result as .npz or .json"),
)
def result(client: Client, args: argparse.Namespace) -> None:
    _finish(client.get_job(args.job).result(), args.output)


@command("cancel", "stop a queued or running job", arg("job", help="the job id"))
def cancel(client: Client, args: argparse.Namespace) -> None:
    record = client.get_job(args.job).cancel()
    print(f"job {record.id}: {record.status}")


@command("models", "list the uploaded models")
def models(client: Client, args: argparse.Namespace) -> None:
    for model in client.list_models():
        print(
            f"{model.id}\t{model.status}\t{model.format}\tn_states={model.n_states}\t"
            f"n_inputs={model.n_inputs}\t{model.filename}"
        )


@command(
    "jobs",
    "list jobs, newest first",
    arg("--status", choices=("queued", "running", "succeeded", "failed", "cancelled"), help="only these"),
)
def jobs(client: Client, args: argparse.Namespace) -> None:
    for record in client.list_jobs(args.status):
        created = record.created_at.isoformat(timespec="seconds") if record.created_at else "-"
        print(f"{record.id}\t{record.status}\t{created}\tmodel={record.model_id}\tn={record.n_initial_states}")


@command(
    "demo",
    "the 3-bit flip-flop walkthrough on a shipped network: find its fixed points, draw figures, summarise",
    arg("--url", default=argparse.SUPPRESS, help="service URL (as fpf --url; default the local server)"),
    arg(
        "--out",
        type=Path,
        default=Path("fpf-demo"),
        help="directory for the figures and the result (default ./fpf-demo)",
    ),
    arg(
        "--cell",
        choices=tuple(CELLS),
        default="tanh",
        help="which trained network: "
        + ", ".join(f"{name} ({text})" for name, text in CELLS.items())
        + "; default tanh",
    ),
    arg("--no-progress", action="store_true", help="do not draw a progress bar"),
)
def demo(client: Client, args: argparse.Namespace) -> None:
    try:
        import matplotlib  # noqa: F401 - checked before anything is uploaded
    except ImportError:
        raise SystemExit("fpf demo draws figures with matplotlib: pip install 'fpf-client[plot]'") from None
    print(f"fpf demo: {CELLS[args.cell]} on {client.url}", file=sys.stderr)
    try:
        walkthrough = run_demo(client, args.cell, args.out, progress=not args.no_progress)
    except ServiceUnavailable:
        print("fpf demo needs a running service: `make serve` (or `fpf-server up`) starts one here", file=sys.stderr)
        raise
    print(walkthrough.summary())


# --- entry point -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``fpf`` parser with one subparser per registered command."""
    parser = argparse.ArgumentParser(prog="fpf", description="Fixed points of recurrent networks, from an fpf service.")
    parser.add_argument(
        "--url", default=os.environ.get("FPF_URL"), help="service URL (default $FPF_URL, else http://127.0.0.1:8000)"
    )
    parser.add_argument("--api-key", default=os.environ.get("FPF_API_KEY"), help="API key (default $FPF_API_KEY)")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="seconds to wait for one answer")
    parser.add_argument(
        "--retry-timeout",
        type=float,
        default=RetryPolicy.timeout,
        help="seconds to keep retrying while the service is unavailable (0: never)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for spec in COMMANDS.values():
        sub = subparsers.add_parser(spec.name, help=spec.help, description=spec.help)
        for flags, kwargs in spec.arguments:
            sub.add_argument(*flags, **kwargs)
        sub.set_defaults(run=spec.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fpf`` with ``argv`` (default: the process's arguments) and return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        with Client(args.url, args.api_key, timeout=args.request_timeout, retry_timeout=args.retry_timeout) as client:
            args.run(client, args)
    except FpfError as exc:
        print(f"fpf: error [{exc.code.value}] {exc.detail}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError) as exc:
        print(f"fpf: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
