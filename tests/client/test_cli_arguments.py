"""The ``fpf`` command line: argument parsing and how errors reach the user (no service needed)."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from fpf_client import FixedPoints
from fpf_client.cli import COMMANDS, build_parser, job_options, main, option_pair, write_result


def closed_port_url() -> str:
    """A local URL nothing listens on: a real connection refusal."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_every_documented_subcommand_is_registered():
    assert set(COMMANDS) >= {"upload", "run", "status", "result", "cancel", "models", "jobs"}


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("tol_q=1e-10", ("tol_q", 1e-10)),
        ("max_iters=50", ("max_iters", 50)),
        ("method=adam", ("method", "adam")),
        ("do_compute_jacobians=false", ("do_compute_jacobians", False)),
        ("max_n_unique=null", ("max_n_unique", None)),
        ("device = cpu", ("device", " cpu")),
    ],
)
def test_option_values_are_read_as_json_else_text(text, pair):
    assert option_pair(text) == pair


def test_dotted_options_go_into_their_method_group():
    pairs = [option_pair(text) for text in ("method=adam", "adam.lr_init=0.1", 'adam.hps={"epsilon": 0.01}')]
    assert job_options(pairs) == {"method": "adam", "adam": {"lr_init": 0.1, "hps": {"epsilon": 0.01}}}
    assert job_options([("lm.warm_start_iters", 2), ("tol_q", 1e-9)]) == {"lm": {"warm_start_iters": 2}, "tol_q": 1e-9}


def test_run_collects_options_arrays_and_output(tmp_path, monkeypatch):
    monkeypatch.delenv("FPF_URL", raising=False)
    monkeypatch.setenv("FPF_API_KEY", "secret")
    np.save(tmp_path / "states.npy", np.ones((4, 3)))
    args = build_parser().parse_args(
        [
            "run",
            "model.pt",
            "--states",
            str(tmp_path / "states.npy"),
            "--option",
            "method=adam",
            "--option",
            "tol_q=1e-9",
            "-o",
            str(tmp_path / "out.json"),
        ]
    )
    assert args.model == "model.pt" and args.states.shape == (4, 3) and args.inputs is None
    assert dict(args.option) == {"method": "adam", "tol_q": 1e-9}
    assert args.output == tmp_path / "out.json"
    assert args.url is None and args.api_key == "secret"


def test_url_comes_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.setenv("FPF_URL", "http://lab:8000")
    assert build_parser().parse_args(["models"]).url == "http://lab:8000"
    assert build_parser().parse_args(["--url", "http://other", "models"]).url == "http://other"


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "m", "--states", "missing.npy"],
        ["run", "m"],
        ["result", "job", "-o", "out.csv"],
        ["run", "m", "--states", "x.npy", "--option", "no-equals-sign"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage: fpf" in capsys.readouterr().err


def test_an_unreachable_service_is_one_line_with_its_code(capsys):
    assert main(["--url", closed_port_url(), "models"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fpf: error [service_unavailable] cannot reach the fpf service at http://127.0.0.1:")
    assert "\n" not in err


def test_an_option_typo_fails_before_the_network(tmp_path, capsys):
    np.save(tmp_path / "states.npy", np.ones((2, 3)))
    argv = ["--url", closed_port_url(), "run", "abc", "--states", str(tmp_path / "states.npy"), "--option", "tol_qq=1"]
    assert main(argv) == 1
    assert capsys.readouterr().err.strip() == "fpf: error [invalid_options] unknown option 'tol_qq'"


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_results_are_written_in_the_format_of_their_suffix(tmp_path, suffix):
    fps = FixedPoints(xstar=np.eye(3, dtype=np.float32), qstar=np.array([1e-14, np.nan, 0.0]))
    path = tmp_path / f"out{suffix}"
    write_result(fps, path)
    loaded = FixedPoints.load(path) if suffix == ".npz" else FixedPoints.from_json_dict(json.loads(path.read_text()))
    assert loaded == fps
