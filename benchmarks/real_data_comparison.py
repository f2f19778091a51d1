"""DiffOSeg against the baselines on a real dataset: the same CPU budget per method and fold.

The entry of ``benchmarks/real_data.py compare`` under its former name, with the same options (recorded runs
and running sweeps call it so); see ``python benchmarks/real_data.py compare --help``.
"""
from __future__ import annotations

import argparse
import shlex
import sys

import real_data_compare
from bench_lib import one_thread_default

PROG = "benchmarks/real_data_comparison.py"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    real_data_compare.add_compare_arguments(p)
    return p


def main(argv: list[str] | None = None) -> None:
    one_thread_default()  # before numpy / torch load
    argv = sys.argv[1:] if argv is None else list(argv)
    p = build_parser()
    a = p.parse_args(argv)
    a.parser, a.command_line = p, f"python {PROG} " + shlex.join(argv)
    real_data_compare.compare(a)


if __name__ == "__main__":
    main()
