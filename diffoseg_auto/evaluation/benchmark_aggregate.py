"""Benchmark step 2, aggregate: mean and sample std over folds, plus the inter-rater reference rows."""
from __future__ import annotations

import numpy as np
import pandas as pd

from diffoseg_auto.evaluation.calibration import SOFT_METRICS

HEADLINE = ("GED", "Dice_soft", "Dice_max", "Dice_max_reverse", "Dice_match", "Dice_consensus_majority",
            "Dice_consensus_soft", "Dice_rater_strict", "Dice_rater_dpersona", *SOFT_METRICS)
INTER_RATER = "inter-rater reference"
TABLE_COLUMNS = ["dataset", "configuration", "metric", "mean", "std", "num_folds"]


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1; NaN for a single fold) over folds per dataset x configuration x metric."""
    if df.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    g = df.groupby(["dataset", "configuration", "metric"], sort=False)["value"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "num_folds": g.count()}).reset_index()


def inter_rater_rows(ds: str, ref: dict) -> list[dict]:
    """Table rows of an inter-rater reference (mean +- std over cases; no folds)."""
    return [{"dataset": ds, "configuration": INTER_RATER, "metric": k, "mean": v, "std": ref["metrics_std"].get(k, np.nan),
             "num_folds": np.nan} for k, v in ref["metrics"].items()]


def with_inter_rater_rows(table: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """``table`` plus ``rows``, sorted by dataset (stable: configurations keep their order)."""
    if rows:
        table = pd.concat([table, pd.DataFrame(rows)], ignore_index=True) if not table.empty else pd.DataFrame(rows)
    return table.sort_values(["dataset"], kind="stable").reset_index(drop=True) if not table.empty else table


def metric_order(metrics) -> list[str]:
    """Headline metrics first (in HEADLINE's order), then the rest alphabetically."""
    metrics = list(dict.fromkeys(metrics))
    head = [m for m in HEADLINE if m in metrics]
    return head + sorted(m for m in metrics if m not in head)
