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


def raise_problems(problems: Iterable[str | None]) -> None:
    """Raise ArgumentError with one line per problem; return when there is none."""
    found = [p for p in problems if p]
    if found:
        raise ArgumentError("\n".join(found))
