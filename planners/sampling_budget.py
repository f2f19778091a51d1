"""The sampling budget chosen by evidence: the smallest setting whose quality is within one standard error of the
best on a measured curve (the "one-standard-error rule" of model selection).

Used for the planned sampling steps S (GED against S) and samples per rater prompt (per-rater Dice against the
number of samples) from curves measured on the tuning fold or seed only (documentation/planning.md, results.md).
"""
from __future__ import annotations

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
