"""Write generated tables into the documentation: the text between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``
of a Markdown file is replaced by a file's content (a table a benchmark wrote), so that no number in results.md is
typed by hand.

    python benchmarks/lib/fill_markers.py documentation/results.md NAME=path/to/table.md [NAME=...]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from diffoseg_auto.utilities.file_ops import atomic_write_text


def fill(text: str, name: str, content: str) -> str:
    """``text`` with the block of marker ``name`` replaced by ``content`` (which ends with one newline)."""
    pattern = re.compile(rf"(<!-- begin {re.escape(name)} -->\n).*?(<!-- end {re.escape(name)} -->)", re.S)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"marker '{name}': expected one '<!-- begin {name} -->' ... '<!-- end {name} -->' block")
    return pattern.sub(lambda m: m.group(1) + content.rstrip("\n") + "\n" + m.group(2), text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/lib/fill_markers.py", description=__doc__.splitlines()[0])
    p.add_argument("doc", type=Path, help="the Markdown file to update")
    p.add_argument("blocks", nargs="+", metavar="NAME=FILE", help="marker name and the file whose text goes there")
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    text = a.doc.read_text()
    for block in a.blocks:
        name, sep, file = block.partition("=")
        if not sep or not Path(file).is_file():
            sys.exit(f"{block}: give NAME=FILE with an existing FILE")
        try:
            text = fill(text, name, Path(file).read_text())
        except ValueError as e:
            sys.exit(f"{a.doc}: {e}")
    atomic_write_text(a.doc, text)


if __name__ == "__main__":
    main()
