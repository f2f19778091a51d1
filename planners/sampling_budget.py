"""The sampling budget chosen by evidence: the smallest setting whose quality is within one standard error of the
best on a measured curve (the "one-standard-error rule" of model selection).

Used for the planned sampling steps S (GED against S) and samples per rater prompt (per-rater Dice against the
number of samples) from curves measured on the tuning fold or seed only (documentation/planning.md, results.md).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence


def smallest_within_one_se(curve: Sequence[Mapping], x: str, metric: str, lower_is_better: bool = True) -> int:
    """The smallest ``x`` whose ``metric`` is within one standard error (``<metric>_se``) of the best row's.

    ``curve``: rows such as {"S": 10, "GED": 0.31, "GED_se": 0.04}. Rows without a finite value are ignored."""
    rows = [r for r in curve if r.get(metric) is not None and r[metric] == r[metric]]
    if not rows:
        raise ValueError(f"no row of the curve has a value for {metric}")
    best = min(rows, key=lambda r: r[metric]) if lower_is_better else max(rows, key=lambda r: r[metric])
    se = best.get(f"{metric}_se") or 0.0
    se = 0.0 if se != se else float(se)
    ok = [r for r in rows if (r[metric] <= best[metric] + se if lower_is_better else r[metric] >= best[metric] - se)]
    return int(min(r[x] for r in ok))


# The measured curves the planner applies the rule to: written by benchmarks/quality/sampling_evidence.py from the benchmark
# outputs of the tuning fold or seed only (a reported fold's curve never decides the plan), plain JSON a user can read.
EVIDENCE_FILE = Path(__file__).with_name("sampling_evidence.json")
# (section, x, metric, lower_is_better): GED against S; strict per-rater Dice against samples per rater prompt
SECTIONS = {"sampling_steps": ("S", "GED", True), "samples_per_rater": ("samples_per_rater", "Dice_rater_strict", False)}


def planned_setting(section: Mapping, name: str) -> int:
    """The rule over several tuning curves: each curve's smallest setting within one SE of its best, and the largest
    of those, so that the planned setting is within one SE of the best on every curve."""
    x, metric, lower = SECTIONS[name]
    curves = section.get("curves") or []
    if not curves:
        raise ValueError(f"sampling evidence '{name}' has no curves")
    return max(smallest_within_one_se(c["rows"], x, metric, lower) for c in curves)


def load_evidence(path: Path = EVIDENCE_FILE) -> dict:
    with open(path) as f:
        return json.load(f)


def planned_sampling_budget(path: Path = EVIDENCE_FILE) -> dict[str, int]:
    """{"sampling_steps": S, "samples_per_rater": n} that the rule picks on the shipped evidence."""
    evidence = load_evidence(path)
    return {name: planned_setting(evidence[name], name) for name in SECTIONS}
