"""One rule for the device of every command (train, predict, benchmarks).

The default is CUDA when a GPU is visible, else the CPU (MPS is only used when asked for: several
ops the denoisers use fall back to the CPU there). Asking for a device that is not there is a
user error with a one-line message, not a traceback.
"""
from __future__ import annotations

import torch

from diffoseg_auto.errors import UserError

DEVICE_CHOICES = ("cuda", "cpu", "mps")


class DeviceUnavailableError(UserError):
    """The requested device does not exist on this machine."""


def default_device_name() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """'cuda' / 'cuda:1' / 'cpu' / 'mps' / None (= the default) -> a usable torch.device.

    'cuda' without an index becomes cuda:0 so that DDP, AMP and checkpoints see the same device."""
    if name is None:
        name = default_device_name()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceUnavailableError(f"-device {name}: unknown device; use one of {', '.join(DEVICE_CHOICES)}.") from None
    if device.type not in DEVICE_CHOICES:
        raise DeviceUnavailableError(f"-device {name}: unsupported device type; use one of {', '.join(DEVICE_CHOICES)}.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"-device {name}: no CUDA GPU is visible on this machine "
                                         "(check nvidia-smi and CUDA_VISIBLE_DEVICES), or use -device cpu.")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"-device {name}: only {torch.cuda.device_count()} CUDA GPU(s) are visible.")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(f"-device {name}: Apple MPS is not available on this machine; use -device cpu.")
    return device
