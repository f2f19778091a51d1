"""How every command runs, whichever way it is started: as a console script (cli/console.py), as
``python -m diffoseg_auto...`` (each entry module's ``__main__`` block) or as a DDP child rank (torchrun
runs ``python -m diffoseg_auto.training.run_training``).

- ``-v`` / ``--verbose`` and ``-q`` / ``--quiet`` set the stdlib logging level;
- a ``UserError`` becomes one line on stderr (``<command>: error: <message>``) and exit code 1;
- a full disk (OSError ENOSPC) too: ``<command>: error: no space left on device while writing <file>; free
  space and run the same command again`` (atomic writes leave no half-written file, so the rerun finishes);
- any other exception is a bug and keeps its traceback.

It lives this low (layer ``utilities``) so that the entry modules of every layer can use it.
"""
from __future__ import annotations

import errno
import logging
import sys
from typing import Any, Callable, Sequence

from diffoseg_auto.errors import UserError

VERBOSE_FLAGS = ("-v", "--verbose")
QUIET_FLAGS = ("-q", "--quiet")
COMMON_OPTIONS_HELP = """
options of every diffoseg_ command:
  -v, --verbose         debug messages (logging level DEBUG)
  -q, --quiet           warnings and errors only (logging level WARNING)"""
# training's epoch lines are that command's output on stdout (training/logger.py gives this logger its handler)
EPOCH_LOGGER = "diffoseg_auto.training.epochs"


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
    logging.getLogger(EPOCH_LOGGER).setLevel(level)  # it does not propagate: the root level does not reach it


def user_error_line(command: str, error: UserError) -> str:
    """One line: multi-line messages (e.g. a list of dataset problems) are joined with '; '."""
    parts = [p.strip().removeprefix("- ") for p in str(error).splitlines() if p.strip()]
    return f"{command}: error: {'; '.join(parts) or type(error).__name__}"


def disk_full_line(command: str, error: OSError) -> str:
    where = f" while writing {error.filename}" if error.filename else ""
    return f"{command}: error: no space left on device{where}; free space and run the same command again"


def run_command(command: str, main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` (default: the process's arguments) as the command ``command``; returns the exit code.
    An entry module ends with ``if __name__ == "__main__": sys.exit(run_command("<command>", main))``."""
    verbosity, rest = split_verbosity(sys.argv[1:] if argv is None else argv)
    configure_logging(verbosity)
    try:
        status = main(rest)
    except UserError as e:
        print(user_error_line(command, e), file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(disk_full_line(command, e), file=sys.stderr)
        return 1
    except SystemExit as e:
        if e.code == 0 and any(a in ("-h", "--help") for a in rest):
            print(COMMON_OPTIONS_HELP)
        raise
    return status if isinstance(status, int) else 0
