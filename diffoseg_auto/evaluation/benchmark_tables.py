"""Benchmark step 3, tables: the aggregated table as benchmark.csv and as markdown (benchmark.md)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from diffoseg_auto.evaluation.benchmark_aggregate import metric_order
from diffoseg_auto.evaluation.calibration import NCC_LEGEND, NOT_AVAILABLE, SOFT_METRICS
from diffoseg_auto.utilities.file_ops import atomic_write, atomic_write_text


def format_cell(mean: float, std: float, metric: str = "") -> str:
    """'mean ± std' (only the mean without a std); no mean: "n/a" for a soft metric (calibration.NCC_LEGEND),
    else empty."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return NOT_AVAILABLE if metric in SOFT_METRICS else ""
    return f"{mean:.4f}" if std is None or math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def dataframe_to_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table of a DataFrame (index as first column); cells are str()-ed."""
    index_name = df.index.name or ""
    header = [index_name] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(df.columns)) + "|"]
    for idx, row in df.iterrows():
        cells = [str(idx)] + ["" if (isinstance(v, float) and math.isnan(v)) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def benchmark_markdown(table: pd.DataFrame) -> str:
    """One section per dataset: rows = metric, columns = configuration (mean ± std over folds)."""
    parts = ["# Benchmark\n", "Mean ± sample std over folds (inter-rater reference: mean ± std over cases). "
             "Metric definitions: documentation/benchmarking.md. " + NCC_LEGEND + "\n"]
    for ds, sub in table.groupby("dataset", sort=False):
        cells = sub.assign(cell=[format_cell(m, s, k) for m, s, k in zip(sub["mean"], sub["std"], sub["metric"])])
        wide = cells.pivot(index="metric", columns="configuration", values="cell")
        wide = wide.reindex(metric_order(wide.index))[list(dict.fromkeys(sub["configuration"]))].fillna("")
        wide.index.name = "metric"
        folds = sub.drop_duplicates("configuration").set_index("configuration")["num_folds"]
        parts.append(f"## {ds}\n")
        parts.append("folds: " + ", ".join(f"{c}: {int(n) if not math.isnan(n) else '-'}" for c, n in folds.items()) + "\n")
        parts.append(dataframe_to_markdown(wide) + "\n")
    return "\n".join(parts)


def write_tables(table: pd.DataFrame, out: Path) -> list[Path]:
    """benchmark.csv and benchmark.md in ``out`` (atomic); returns the two paths."""
    csv, md = Path(out) / "benchmark.csv", Path(out) / "benchmark.md"
    atomic_write(csv, lambda p: table.to_csv(p, index=False))
    atomic_write_text(md, benchmark_markdown(table))
    return [csv, md]
