"""The one wrapper every console script goes through.

setup.py registers each command twice: as a console script pointing here
(``diffoseg_train = diffoseg_auto.cli.console:diffoseg_train``) and in the entry-point group
``diffoseg_auto.commands`` with its real ``main`` (``diffoseg_auto.training.run_training:main``).
Looking up ``diffoseg_train`` in this module returns a function that runs that ``main`` through
``run_command``:

- ``-v`` / ``--verbose`` and ``-q`` / ``--quiet`` (any command) set the stdlib logging level;
- a ``UserError`` becomes one line on stderr (``<command>: error: <message>``) and exit code 1;
- any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
import logging
import sys
from importlib.metadata import entry_points
from typing import Any, Callable, Sequence

from diffoseg_auto.errors import UserError
from diffoseg_auto.training.logger import EPOCH_LOGGER

COMMAND_GROUP = "diffoseg_auto.commands"
VERBOSE_FLAGS = ("-v", "--verbose")
QUIET_FLAGS = ("-q", "--quiet")
COMMON_OPTIONS_HELP = """
options of every diffoseg_ command:
  -v, --verbose         debug messages (logging level DEBUG)
  -q, --quiet           warnings and errors only (logging level WARNING)"""


def split_verbosity(argv: Sequence[str]) -> tuple[int, list[str]]:
    """(+1 per -v, -1 per -q, the remaining arguments); nothing after '--' is taken."""
    level, rest = 0, []
    args = list(argv)
    for i, a in enumerate(args):
        if a == "--":
            rest += args[i:]
            break
        if a in VERBOSE_FLAGS:
            level += 1
        elif a in QUIET_FLAGS:
            level -= 1
        else:
            rest.append(a)
    return level, rest


def configure_logging(verbosity: int) -> None:
    """INFO by default, DEBUG with -v (with the logger's name), WARNING with -q; messages go to stderr,
    training's epoch lines to stdout (silenced by -q)."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    fmt = "%(levelname)s %(name)s: %(message)s" if verbosity > 0 else "%(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)
    logging.getLogger(EPOCH_LOGGER).setLevel(min(level, logging.INFO) if verbosity >= 0 else level)


def user_error_line(command: str, error: UserError) -> str:
    """One line: multi-line messages (e.g. a list of dataset problems) are joined with '; '."""
    parts = [p.strip().removeprefix("- ") for p in str(error).splitlines() if p.strip()]
    return f"{command}: error: {'; '.join(parts) or type(error).__name__}"


def run_command(command: str, main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` as the console script ``command``; returns the exit code."""
    verbosity, rest = split_verbosity(sys.argv[1:] if argv is None else argv)
    configure_logging(verbosity)
    try:
        status = main(rest)
    except UserError as e:
        print(user_error_line(command, e), file=sys.stderr)
        return 1
    except SystemExit as e:
        if e.code == 0 and any(a in ("-h", "--help") for a in rest):
            print(COMMON_OPTIONS_HELP)
        raise
    return status if isinstance(status, int) else 0


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
