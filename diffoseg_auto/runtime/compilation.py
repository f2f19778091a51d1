"""Optional torch.compile (``--compile``), off by default: compiling costs minutes on a CPU and
pays off only for long runs on a GPU."""
from __future__ import annotations

from typing import Callable, TypeVar

import torch

from diffoseg_auto.errors import UserError

F = TypeVar("F", bound=Callable)


class CompileUnavailableError(UserError):
    """torch.compile cannot run in this installation."""


def maybe_compile(fn: F, enabled: bool) -> F:
    """torch.compile(fn) when enabled (a module or a bound method such as ``net.denoise``), else fn.

    ``dynamic=None`` lets torch mark a dimension dynamic after it changed once (the last window
    batch is smaller), instead of recompiling for every batch size."""
    if not enabled:
        return fn
    if not hasattr(torch, "compile"):
        raise CompileUnavailableError(f"--compile needs torch >= 2.0 (installed: {torch.__version__}).")
    return torch.compile(fn, dynamic=None)
