"""The devices the engine can run on here, and the torch device a job's ``device`` option names."""

from __future__ import annotations

import torch

from fpf_client.errors import DeviceUnavailable


def available_devices() -> list[str]:
    """The values of the ``device`` option this process can serve: ``cpu``, and ``cuda`` with a GPU."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def resolve_device(name: str) -> torch.device:
    """The torch device of a ``device`` option; ``auto`` is CUDA when present.

    Raises
    ------
    DeviceUnavailable
        For ``cuda`` where torch sees no CUDA device, instead of torch's assertion deep in a solve.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        reason = "torch was built without CUDA" if torch.version.cuda is None else "torch sees no CUDA device"
        raise DeviceUnavailable(
            f"the job asks for device {name!r}, but this worker has none ({reason}); "
            f"devices here: {available_devices()}",
            device=name,
            devices=available_devices(),
        )
    return device
