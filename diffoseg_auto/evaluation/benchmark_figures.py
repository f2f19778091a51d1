"""Benchmark step 4, figures: benchmark.png (bars + rater x prompt matrix), per-case sample grids and the
reliability diagram of each method (figures/reliability__<dataset>__<configuration>__<method>.png)."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from diffoseg_auto.evaluation.benchmark_aggregate import HEADLINE, metric_order

logger = logging.getLogger(__name__)


def plot_table(table: pd.DataFrame, matrices: dict, out_png: Path) -> None:
    """One panel per dataset: headline metric bars per configuration, and the first configuration's matrix."""
    from diffoseg_auto.evaluation.figures import plot_benchmark

    panels = []
    for ds, sub in table.groupby("dataset", sort=False):
        bars: dict[str, dict] = {}
        for _, r in sub[sub["metric"].isin(HEADLINE)].iterrows():
            bars.setdefault(r["configuration"], {})[r["metric"]] = (r["mean"], r["std"])
        order = metric_order(m for c in bars for m in bars[c])
        mats = [(cfg, m) for (d, cfg), m in matrices.items() if d == ds]
        panel = {"dataset": ds, "bars": bars, "metrics": order, "matrix": None}
        if mats:
            cfg, (m, raters) = mats[0]
            panel.update(matrix=m, raters=raters, matrix_label=f"rater x prompt Dice ({cfg}, mean over folds)")
        panels.append(panel)
    plot_benchmark(panels, out_png)


def case_figures(raw_folder: Path, pred_folders: Path | list[Path], out_dir: Path, prefix: str,
                 max_cases: int = 3) -> list[Path]:
    """Sample-grid figures for the first ``max_cases`` predicted cases.

    ``pred_folders``: one prediction folder or several (e.g. Stage I and Stage II validation); the
    samples come from the first that has them, the per-rater predictions likewise."""
    from diffoseg_auto.dataset.raw_dataset import RawDataset
    from diffoseg_auto.evaluation.figures import CaseGridLayout, plot_case_grid
    from diffoseg_auto.evaluation.prediction_folder import list_predicted_cases, load_prediction, load_reference

    folders = [Path(pred_folders)] if isinstance(pred_folders, (str, Path)) else [Path(f) for f in pred_folders]
    ds = RawDataset(raw_folder)
    images = ds.image_files_by_case("Tr")
    cases = sorted({c for f in folders for c in list_predicted_cases(f, ds.file_ending)})
    written = []
    for case in cases[:max_cases]:
        if case not in images:
            logger.warning(f"no image for case '{case}' in {raw_folder / 'imagesTr'}; figure skipped.")
            continue
        labels, mask, props, ref_file = load_reference(raw_folder / "labelsTr", ds.raters, case, ds.file_ending)
        samples = rater_preds = None
        for f in folders:
            s, _, r, _ = load_prediction(f, ds.raters, case, ds.file_ending, props, ref_file)
            samples = samples if samples is not None else s
            rater_preds = rater_preds if rater_preds is not None else r
        image, _, _, _ = ds.load_case(case, images[case])
        out = out_dir / f"{prefix}__{case}.png"
        plot_case_grid(image, labels, samples, rater_preds, out, mask,
                       CaseGridLayout(rater_names=ds.raters, title=f"{prefix} {case}"))
        written.append(out)
    return written


def reliability_figure(bins: dict, out_dir: Path, dataset: str, configuration: str, method: str) -> Path:
    """figures/reliability__<dataset>__<configuration>__<method>.png of pooled reliability bins; returns the path."""
    from diffoseg_auto.evaluation.figures import plot_reliability

    out = Path(out_dir) / f"reliability__{dataset}__{configuration}__{method}.png"
    plot_reliability(bins, out, title=f"{method}: {dataset} {configuration}")
    return out
