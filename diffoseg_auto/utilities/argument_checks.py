"""Argument checks done before a command touches any file: every problem on its own line."""
from __future__ import annotations

from typing import Iterable

from diffoseg_auto.errors import UserError


class ArgumentError(UserError):
    """One or more bad command-line arguments (one line each)."""


def at_least(option: str, value: float | int | None, minimum: float | int) -> str | None:
    """The problem line when ``value`` is given and below ``minimum``, else None."""
    if value is not None and value < minimum:
        return f"{option} must be >= {minimum}, got {value}."
    return None


def above(option: str, value: float | None, bound: float) -> str | None:
    if value is not None and not value > bound:
        return f"{option} must be > {bound:g}, got {value}."
    return None


def device_problem(name: str, option: str = "-device") -> str | None:
    """Why ``name`` cannot be used on this machine, or None."""
    import torch

    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        return f"{option} must be cpu, cuda or mps, got '{name}'."
    if kind == "cuda" and not torch.cuda.is_available():
        return f"{option} {name}: no CUDA GPU is visible on this machine. Use {option} cpu."
    if kind == "mps" and not torch.backends.mps.is_available():
        return f"{option} mps: Apple MPS is not available on this machine. Use {option} cpu."
    return None


def raise_problems(problems: Iterable[str | None]) -> None:
    """Raise ArgumentError with one line per problem; return when there is none."""
    found = [p for p in problems if p]
    if found:
        raise ArgumentError("\n".join(found))
