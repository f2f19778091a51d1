"""real_data.py routes: a route's table (configurations against each other, repeated runs) from compare outputs."""
from __future__ import annotations

import argparse
from pathlib import Path

ROUTE_METRICS = ("GED", "Dice_soft", "Dice_rater_strict", "Rater_area_spearman", "Dice_consensus_majority", "ECE",
                 "Uncertainty_NCC")
REFERENCE_ROWS = ("all-empty", "raters' majority repeated", "raters' STAPLE repeated", "inter-rater")


def route_table(outs: list[Path], method: str = "DiffOSeg") -> str:
    """One row per configuration: ``method``'s strict held-out metrics, mean over the runs (--out folders) of that
    configuration, with every run's GED so that the run-to-run spread stands beside the difference; then the
    reference rows of the same cases. Runs of one route must be on the same fold(s): checked, not assumed."""
    import pandas as pd

    tables = []
    for out in outs:
        f = out / "method_comparison_per_fold.csv"
        if not f.is_file():
            raise SystemExit(f"{f}: missing; give the --out folder of a finished compare run")
        t = pd.read_csv(f)
        tables.append(t[t["mode"] == "strict"].assign(run=str(out)))
    df = pd.concat(tables)
    folds = df.groupby("run")["fold"].apply(lambda s: tuple(sorted(set(s))))
    if folds.nunique() != 1:
        raise SystemExit(f"the runs cover different folds ({dict(folds)}); a route compares on the same cases")
    fmt = lambda v: "" if v != v else f"{v:.3f}"  # noqa: E731
    ours = df[df["method"] == method]
    lines = [f"| configuration ({method}, fold(s) {', '.join(map(str, folds.iloc[0]))}) | runs | GED of each run | "
             + " | ".join(ROUTE_METRICS) + " |", "|---|---:|---|" + "---:|" * len(ROUTE_METRICS)]
    for cfg, g in ours.groupby("configuration", sort=False):
        per_run = g.groupby(["run", "metric"])["value"].mean().unstack()  # a run's mean over its folds
        ged = ", ".join(fmt(v) for v in per_run["GED"])
        lines.append(f"| {cfg} | {len(per_run)} | {ged} | "
                     + " | ".join(fmt(per_run[m].mean()) if m in per_run else "" for m in ROUTE_METRICS) + " |")
    refs = df[df["run"] == df["run"].iloc[0]]  # the same cases in every run: the first run's reference rows
    for ref in REFERENCE_ROWS:
        r = refs[refs["method"] == ref].groupby("metric")["value"].mean()
        if len(r):
            lines.append(f"| {ref} (same cases) | | | " + " | ".join(
                fmt(r[m]) if m in r and m in ("GED", "Dice_soft") else "" for m in ROUTE_METRICS) + " |")
    return "\n".join(lines) + "\n"


def routes(a: argparse.Namespace) -> None:
    text = route_table([Path(o) for o in a.outs], a.method)
    if a.md:
        Path(a.md).write_text(text)
    print(text)


def add_routes_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("routes", help="a route's table: configurations against each other over repeated runs",
                       description=route_table.__doc__.replace("``", ""))
    r.add_argument("outs", nargs="+", help="--out folders of finished compare runs (repeats of a configuration "
                                           "are averaged)")
    r.add_argument("--method", default="DiffOSeg")
    r.add_argument("--md", default=None, help="also write the table to this file")
    r.set_defaults(func=routes)
