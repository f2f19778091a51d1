"""The one base class of user-facing errors.

A ``UserError`` means the input (a file, an argument, an environment variable) is wrong and the
user can fix it: console scripts print its message as one line and exit 1. Anything else is a
bug and keeps its traceback. Every message names the file or argument and says the fix.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix; the message is one line naming the file/argument and the fix."""


class InvalidArgumentError(UserError, ValueError):
    """A command-line or function argument with a wrong value (the message names it and the allowed values)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file an earlier step should have written is missing (the message names the step that writes it)."""


class CorruptFileError(UserError, ValueError):
    """A file that exists but cannot be used: empty, cut short, not its format, or the wrong shape or content
    (the message names the file and how to get a good one)."""
