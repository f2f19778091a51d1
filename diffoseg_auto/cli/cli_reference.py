"""Generate documentation/cli.md from the argparse parsers of the installed console scripts.

`python -m diffoseg_auto.cli.cli_reference > documentation/cli.md` rewrites the file;
tests/test_cli_reference.py fails when the file and the code disagree, so the reference
cannot drift from the code.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys

from diffoseg_auto.cli.console import command_targets
from diffoseg_auto.utilities.command_runner import COMMON_OPTIONS_HELP

HEADER = """# Command-line reference

Generated from the code by `python -m diffoseg_auto.cli.cli_reference > documentation/cli.md`
(a test checks that this file is up to date). Option names follow nnU-Net v2 where the meaning is
the same (`-d`, `-c`, `-f`, `-np`, `-tr`, `-p`, `--c`, `--val`, `-chk`, `-step_size`, `--disable_tta`,
`-device`, `-npp`, `-nps`, `--verify_dataset_integrity`, `-gpu_memory_target`, `-pl`, `--clean`).
Every command also takes `-v` / `-q` and reports a user error as one line on stderr with exit code 1,
also when run as `python -m <module>` (the module named under each command):
```text{common}
```
""".format(common=COMMON_OPTIONS_HELP)


def console_scripts() -> dict[str, str]:
    """Command name -> 'module:function' of the real main of every console script of this project."""
    return command_targets()


def help_text(target: str) -> str:
    """Run the entry point with -h and capture what argparse prints."""
    module, func = target.split(":")
    fn = getattr(importlib.import_module(module), func)
    buf = io.StringIO()
    old_argv, old_cols = sys.argv, os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width: fix it for stable output
    sys.argv = [target.split(":")[0].rsplit(".", 1)[-1], "-h"]
    try:
        with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
            fn()
    finally:
        sys.argv = old_argv
        if old_cols is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old_cols
    return buf.getvalue().strip()


def generate_cli_markdown() -> str:
    parts = [HEADER]
    for name, target in sorted(console_scripts().items()):
        text = help_text(target)
        # the program name argparse shows is the module's; show the command's instead
        lines = text.splitlines()
        if lines and lines[0].startswith("usage:"):
            first = lines[0].split(None, 2)
            lines[0] = "usage: " + name + (" " + first[2] if len(first) > 2 else "")
        parts.append(f"## `{name}`\n\n(`{target}`)\n\n```text\n" + "\n".join(lines) + "\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(generate_cli_markdown())
