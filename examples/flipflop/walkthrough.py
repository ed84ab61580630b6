"""The flip-flop walkthrough through a running fpf: export, analyse with the client, draw the figures.

``python -m examples.flipflop.walkthrough --cell lstm --format onnx --out DIR`` exports the shipped
network (``--train`` trains a fresh one first, in seconds), records trials through it, then finds
its fixed points through the service at ``--url`` from trajectory states plus noise 0.5 at zero
input, and writes the figures beside the exported model. ``fpf demo`` runs the same analysis with
only the client installed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fpf_client import Client
from fpf_client.demo import CELLS as CELL_NAMES
from fpf_client.demo import FlipFlopRecording, Walkthrough, run_walkthrough

from .export import FORMATS, export_step, load_readout
from .networks import CELLS, Cell, readout_arrays, step_module
from .recording import record_trials, shipped_step
from .task import FlipFlopTask
from .train import evaluate, train_network

SHIPPED = Path(__file__).resolve().parents[2] / "tests" / "data"


def prepare(
    cell: Cell, format: str, out_dir: Path, *, train: bool = False, seed: int = 0
) -> tuple[Path, FlipFlopRecording]:
    """Export the network of ``cell`` as ``format`` into ``out_dir`` and record trials through it."""
    if train:
        start = time.perf_counter()
        network = train_network(cell, seed=seed)
        accuracy, _ = evaluate(network, FlipFlopTask(), n_trials=1024, seed=seed + 2)
        print(f"trained the {cell} network in {time.perf_counter() - start:.0f} s: sign accuracy {accuracy:.2%}")
        step = step_module(network)
        arrays = readout_arrays(network)
        readout = (arrays["weight"].numpy(), arrays["bias"].numpy())
    else:
        step = shipped_step(cell, SHIPPED)
        readout = load_readout(SHIPPED / f"flipflop_{cell}_readout.npz")
    out_dir.mkdir(parents=True, exist_ok=True)
    return export_step(cell, step, format, out_dir), record_trials(step, readout)


def walkthrough(client: Client, cell: Cell, format: str, out_dir: Path, *, train: bool = False) -> Walkthrough:
    """Export, analyse through ``client`` and draw: the whole walkthrough for one network and format."""
    model, recording = prepare(cell, format, out_dir, train=train)
    return run_walkthrough(
        client,
        model,
        recording,
        out_dir,
        label=f"3-bit flip-flop, {CELL_NAMES[cell]} ({format})",
        prefix=f"flipflop_{cell}_{format}",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=CELLS, default="tanh")
    parser.add_argument("--format", choices=tuple(FORMATS), default="torchscript")
    parser.add_argument("--out", type=Path, default=Path("flipflop-walkthrough"), help="directory for every file")
    parser.add_argument("--url", help="the fpf service (default $FPF_URL, else http://127.0.0.1:8000)")
    parser.add_argument("--train", action="store_true", help="train a fresh network instead of the shipped one")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with Client(args.url) as client:
        print(walkthrough(client, args.cell, args.format, args.out, train=args.train).summary())


if __name__ == "__main__":
    main()
