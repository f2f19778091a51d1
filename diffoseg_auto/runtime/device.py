"""One rule for the device of every command (train, predict, benchmarks).

The default is CUDA when a GPU is visible, else the CPU (MPS is only used when asked for: several
ops the denoisers use fall back to the CPU there). Asking for a device that is not there is a
user error with a one-line message, not a traceback. ``device_problem`` is the rule (argument
checks collect its line with the others); ``resolve_device`` applies it.
"""
from __future__ import annotations

import torch

from diffoseg_auto.errors import UserError

DEVICE_CHOICES = ("cuda", "cpu", "mps")


class DeviceUnavailableError(UserError):
    """The requested device does not exist on this machine."""


def default_device_name() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_problem(name: str | torch.device | None, option: str = "-device") -> str | None:
    """Why ``name`` cannot be used on this machine (one line), or None. None = the default device."""
    if name is None:
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        return f"{option} {name}: unknown device; use one of {', '.join(DEVICE_CHOICES)}."
    if device.type not in DEVICE_CHOICES:
        return f"{option} {name}: unsupported device type; use one of {', '.join(DEVICE_CHOICES)}."
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"{option} {name}: no CUDA GPU is visible on this machine. Use {option} cpu."
        if (device.index or 0) >= torch.cuda.device_count():
            return f"{option} {name}: only {torch.cuda.device_count()} CUDA GPU(s) are visible."
    if device.type == "mps" and not torch.backends.mps.is_available():
        return f"{option} {name}: Apple MPS is not available on this machine. Use {option} cpu."
    return None


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """'cuda' / 'cuda:1' / 'cpu' / 'mps' / None (= the default) -> a usable torch.device.

    'cuda' without an index becomes cuda:0 so that DDP, AMP and checkpoints see the same device."""
    problem = device_problem(name)
    if problem:
        raise DeviceUnavailableError(problem)
    device = torch.device(default_device_name() if name is None else name)
    if device.type == "cuda":
        return torch.device("cuda", 0 if device.index is None else device.index)
    return device
