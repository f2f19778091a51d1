"""real_data.py test, its numbers: every row scored on the same sampled test cases, mean ± standard error over
those cases, DiffOSeg's paired GED differences to every other row, and the Markdown of the held-out test table.

Two tables carry everything (both long, one line per row and mode):

- per case: method, mode, case, one column per metric (score_fold's per-case values against labelsTs);
- sample level: method, mode, metric, value: a number of the whole sample, not of a case (Rater_area_spearman).

The summary (mean, se, num_cases per method, mode, metric) and the paired differences are computed from them, so
that rows recorded by another session (--record) merge with this session's before anything is averaged.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas loads numpy: real_data.py sets one thread first
    import pandas as pd

    from diffoseg_auto.dataset.raw_dataset import RawDataset

KEYS = ["method", "mode", "case"]
SAMPLE_LEVEL_COLUMNS = ["method", "mode", "metric", "value"]
SUMMARY_COLUMNS = ["dataset", "configuration", "method", "mode", "metric", "mean", "se", "num_cases"]
PAIRED_COLUMNS = ["mode", "method", "mean", "se", "num_cases", "lower_by_more_than_se"]
REFERENCE = "DiffOSeg"  # the row whose paired differences to every other row are reported


def score_test_cases(ds: RawDataset, method_folders: dict, cases: list[str],
                     num_samples: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-case table, sample-level table) of every method in ``method_folders`` (row -> prediction folders),
    the trivial rows and the inter-rater row on ``cases`` of the dataset's test labels (labelsTs)."""
    import pandas as pd

    from diffoseg_auto.evaluation.method_comparison import score_fold

    per_case: dict = {}
    means, _ = score_fold(ds, method_folders, cases, num_samples, split="Ts", per_case_out=per_case)
    rows = [{"method": row, "mode": mode, **d} for (row, mode), values in per_case.items() for d in values]
    case_metrics = {k for (row, mode), values in per_case.items() for d in values for k in d}
    sample = [{"method": row, "mode": mode, "metric": k, "value": v} for (row, mode), m in means.items()
              for k, v in m.items() if k not in case_metrics]
    return pd.DataFrame(rows), pd.DataFrame(sample, columns=SAMPLE_LEVEL_COLUMNS)


def mean_se(values) -> tuple[float, float, int]:
    """Mean, standard error (sample std / sqrt(n)) and n of the finite values (NaN, NaN, 0 without any)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else math.nan, int(len(v))


def summary_table(per_case: pd.DataFrame, sample_level: pd.DataFrame, dataset: str,
                  configuration: str) -> pd.DataFrame:
    """Mean ± standard error over the cases of every (method, mode, metric); a sample-level number as its mean
    (se NaN). A soft metric without any value (no soft output) keeps its row with a NaN mean ("n/a")."""
    import pandas as pd

    from diffoseg_auto.evaluation.calibration import SOFT_METRICS

    out = []
    metrics = [c for c in per_case.columns if c not in KEYS]
    for (method, mode), sub in per_case.groupby(["method", "mode"], sort=False):
        for m in metrics:
            mean, se, n = mean_se(sub[m])
            if n or m in SOFT_METRICS:
                out.append([dataset, configuration, method, mode, m, mean, se, n])
    for r in sample_level.itertuples():
        n = int(per_case[(per_case["method"] == r.method) & (per_case["mode"] == r.mode)]["case"].nunique())
        if math.isfinite(r.value):
            out.append([dataset, configuration, r.method, r.mode, r.metric, float(r.value), math.nan, n])
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def paired_differences(per_case: pd.DataFrame, metric: str = "GED", reference: str = REFERENCE) -> pd.DataFrame:
    """Per mode and every other row: the mean over the cases both rows scored of ``reference``'s ``metric``
    minus the row's, its paired standard error, the number of cases, and whether the reference is lower by more
    than that error. Empty when ``reference`` has no rows."""
    import pandas as pd

    out = []
    for mode, sub in per_case.groupby("mode", sort=False):
        wide = sub.pivot(index="case", columns="method", values=metric)
        if reference not in wide.columns:
            continue
        for method in dict.fromkeys(sub["method"]):
            if method == reference:
                continue
            mean, se, n = mean_se(wide[reference] - wide[method])
            out.append([mode, method, mean, se, n, bool(n > 1 and mean + se < 0)])
    return pd.DataFrame(out, columns=PAIRED_COLUMNS)


def row_order(methods: list[str], present: list[str]) -> list[str]:
    """The trained methods in ``methods`` order, then the other rows (trivial, inter-rater) as they come."""
    return [m for m in methods if m in present] + [m for m in dict.fromkeys(present) if m not in methods]


def cases_sentence(summary: pd.DataFrame, order: list[str]) -> str:
    """How many cases each row's GED (strict) was scored on: one number where every row has the same."""
    ged = summary[(summary["metric"] == "GED") & (summary["mode"] == "strict")].set_index("method")["num_cases"]
    counts = {m: int(ged[m]) for m in order if m in ged.index}
    if len(set(counts.values())) == 1:
        return f"{next(iter(counts.values()))} cases each"
    return ", ".join(f"{m}: {n}" for m, n in counts.items()) + " cases (the inter-rater row: those with two raters)"


def paired_markdown(paired: pd.DataFrame, metric: str = "GED", reference: str = REFERENCE) -> str:
    from diffoseg_auto.evaluation.benchmark_tables import format_cell

    if paired.empty:
        return ""
    lines = [f"Paired {metric} differences, {reference} minus the row, on the cases both scored (mean ± paired "
             f"standard error; negative: {reference} lower):", "",
             "| mode | row | difference | cases | lower by more than the SE |", "|---|---|---:|---:|---|"]
    for r in paired.itertuples():
        lines.append(f"| {r.mode} | {r.method} | {format_cell(r.mean, r.se, metric)} | {r.num_cases} | "
                     f"{'yes' if r.lower_by_more_than_se else 'no'} |")
    return "\n".join(lines) + "\n"


def held_out_markdown(summary: pd.DataFrame, paired: pd.DataFrame, methods: list[str], context: dict) -> str:
    """The held-out test table: what was tested and how (``context``: dataset, configuration, test_split,
    sample, training, raters, raters_are_slots) above the strict and dpersona tables, the per-rater Dice (strict)
    and the paired differences."""
    from diffoseg_auto.evaluation.method_comparison import METRICS, wide_markdown
    from diffoseg_auto.evaluation.metrics import MODES

    order = row_order(methods, list(summary["method"]))
    raters = context["raters"]
    slots = "; slots, not persons: dataset.json raters_are_slots" if context.get("raters_are_slots") else ""
    parts = [f"# Held-out test: {context['dataset']}, {context['configuration']}\n",
             f"Test split: {context['test_split']}.\n", f"Sample: {context['sample']}\n",
             f"Training: {context['training']}\n",
             "Values: mean ± standard error over the sampled cases (sample std / √n; Rater_area_spearman: one number "
             f"of the whole sample); every row is scored on the same cases ({cases_sentence(summary, order)}). "
             "Metric definitions: documentation/benchmarking.md.\n"]
    for mode in MODES:
        sub = summary[(summary["mode"] == mode) & summary["metric"].isin(METRICS)]
        if not sub.empty:
            parts += [f"## {mode} mode\n", wide_markdown(sub, order, list(METRICS), lambda k: k, "se") + "\n"]
    per_rater = [f"Dice_rater_strict/{k}" for k in range(len(raters))]
    sub = summary[(summary["mode"] == "strict") & summary["metric"].isin(per_rater)]
    if not sub.empty:
        parts += [f"## per-rater Dice (strict{slots})\n",
                  wide_markdown(sub, order, per_rater, lambda k: raters[int(k.rsplit("/", 1)[1])], "se") + "\n"]
    if not paired.empty:
        parts += ["## Paired differences\n", paired_markdown(paired)]
    return "\n".join(parts)
