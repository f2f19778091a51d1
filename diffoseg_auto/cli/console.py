"""The one wrapper every console script goes through.

setup.py registers each command twice: as a console script pointing here
(``diffoseg_train = diffoseg_auto.cli.console:diffoseg_train``) and in the entry-point group
``diffoseg_auto.commands`` with its real ``main`` (``diffoseg_auto.training.run_training:main``).
Looking up ``diffoseg_train`` in this module returns a function that runs that ``main`` through
``utilities.command_runner.run_command`` (``-v`` / ``-q``; a ``UserError`` is one line on stderr and exit
code 1, any other exception keeps its traceback), as the ``python -m`` runs of the entry modules do.
"""
from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points
from typing import Any, Callable

from diffoseg_auto.utilities.command_runner import run_command

COMMAND_GROUP = "diffoseg_auto.commands"


def command_targets() -> dict[str, str]:
    """Command name -> 'module:function' of its real main (as declared in setup.py CONSOLE_SCRIPTS)."""
    return {ep.name: ep.value for ep in entry_points(group=COMMAND_GROUP)}


def load_main(target: str) -> Callable[[list[str]], Any]:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def __getattr__(name: str) -> Callable[[], None]:
    """``from diffoseg_auto.cli.console import diffoseg_train`` (what a console script does)."""
    targets = command_targets()
    if name not in targets:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r} (no command {name!r} in {COMMAND_GROUP})")

    def console_script() -> None:
        sys.exit(run_command(name, load_main(targets[name])))

    console_script.__name__ = name
    return console_script
