"""``diffoseg_benchmark -tr A B C``: the method comparison of method_comparison.py for datasets x
configurations, written as CSV, JSON, Markdown, bar charts and sample grids.

    OUT/method_comparison.md            methods x metrics per mode, per-rater Dice (strict)
    OUT/method_comparison.csv           mean, std, num_folds per dataset, configuration, row, mode, metric
    OUT/method_comparison_per_fold.csv  the per-fold values behind them
    OUT/method_comparison.json          both, with the folds, cases and N used
    OUT/figures/bars__<ds>__<cfg>__<metric>.png    one bar chart per headline metric
    OUT/figures/samples__<ds>__<cfg>__fold<f>__<case>.png   (--figures) every method's samples on one case
    OUT/figures/reliability__<ds>__<cfg>__<method>.png      (--figures) reliability diagram of each row (trained
                                                            methods and trivial rows), pixels pooled over the folds' cases
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from diffoseg_auto.dataset.raw_dataset import RawDataset
from diffoseg_auto.evaluation.benchmark_figures import reliability_figure
from diffoseg_auto.evaluation.comparison_figures import plot_method_grid, plot_metric_bars
from diffoseg_auto.evaluation.method_comparison import (METRICS, aggregate, collect, comparison_markdown,
                                                        load_method_case, method_label, prediction_folders)
from diffoseg_auto.evaluation.prediction_folder import load_reference
from diffoseg_auto.paths import preprocessed_dataset_folder, raw_root, results_root
from diffoseg_auto.plans.plans import load_plans
from diffoseg_auto.results_layout import trainer_folder
from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
from diffoseg_auto.utilities.file_ops import atomic_write, atomic_write_text, save_json

logger = logging.getLogger(__name__)


def planned_num_samples(preprocessed_folder: Path, plans: str, configuration: str, fallback: int) -> int:
    """N of the trivial rows: the plans' diffusion.num_samples (what the methods are predicted with)."""
    f = Path(preprocessed_folder) / f"{plans}.json"
    return int(load_plans(f).get_configuration(configuration).diffusion.num_samples) if f.is_file() else fallback


def sample_grids(ds: RawDataset, results_folder: Path, configuration: str, trainers: list[str], plans: str,
                 fold: int, cases: list[str], out_dir: Path) -> list[Path]:
    """One grid per case: the image, the raters and every method's samples."""
    images = ds.image_files_by_case("Tr")
    written = []
    for case in cases:
        labels, mask, props, ref_file = load_reference(ds.folder / "labelsTr", ds.raters, case, ds.file_ending)
        samples = {}
        for tr in trainers:
            folders = prediction_folders(trainer_folder(ds.name, tr, plans, configuration, root=results_folder), fold)
            samples[method_label(tr)] = load_method_case(ds, folders, case, props, ref_file)[0] if folders else None
        image = ds.load_case(case, images[case])[0]
        out = out_dir / f"samples__{ds.name}__{configuration}__fold{fold}__{case}.png"
        plot_method_grid(image, labels, mask, ds.raters, samples, out, title=f"{ds.name} {configuration} fold {fold} {case}")
        written.append(out)
    return written


@dataclass(frozen=True)
class ComparisonSettings:
    """What the method comparison draws and with which N its trivial rows are scored."""
    figures: bool = False             # sample grids and reliability diagrams (bar charts are always drawn)
    num_samples: int | None = None    # N of the trivial rows (None: the plans' diffusion.num_samples)
    figure_cases: int = 3             # cases per sample-grid figure set


def compare_methods(datasets: list[str | int], configurations: list[str], folds: list[int], trainers: list[str],
                    output_folder: str | Path | None = None, plans: str = "DiffOSegPlans",
                    settings: ComparisonSettings = ComparisonSettings()) -> pd.DataFrame:
    """Score every trainer, the trivial rows and the inter-rater row; write the files; return the aggregated table."""
    out = Path(output_folder) if output_folder is not None else results_root() / "method_comparison"
    figures, num_samples = settings.figures, settings.num_samples
    longs, info, raters, fold_lists = [], {}, {}, {}
    for d in datasets:
        name = resolve_dataset_name(d)
        ds = RawDataset(raw_root() / name)
        raters[name] = ds.raters
        for cfg in configurations:
            n = num_samples or planned_num_samples(preprocessed_dataset_folder(name), plans, cfg, ds.num_raters)
            long, cases, reliability = collect(ds.folder, preprocessed_dataset_folder(name), results_root(), cfg, folds,
                                               trainers, plans, n)
            longs.append(long)
            info[f"{name}/{cfg}"] = {"num_samples": n, "cases_per_fold": {str(f): c for f, c in cases.items()}}
            fold_lists[name] = sorted(set(fold_lists.get(name, [])) | set(cases))
            table = aggregate(long)
            for metric in METRICS:
                if (table["metric"] == metric).any():
                    plot_metric_bars(table, metric, out / "figures" / f"bars__{name}__{cfg}__{metric}.png",
                                     title=f"{name} {cfg}: {metric} (mean ± std over folds)")
            if figures:
                for row, bins in reliability.items():
                    reliability_figure(bins, out / "figures", name, cfg, row)
            if figures and cases:
                first = min(cases)
                sample_grids(ds, results_root(), cfg, trainers, plans, first, cases[first][:settings.figure_cases],
                             out / "figures")
    long = pd.concat(longs, ignore_index=True) if longs else pd.DataFrame()
    table = aggregate(long)
    if table.empty:
        logger.warning("nothing to compare: no method has predictions for the requested folds.")
        return table
    atomic_write(out / "method_comparison.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(out / "method_comparison_per_fold.csv", lambda p: long.to_csv(p, index=False))
    save_json({"trainers": trainers, "plans": plans, "folds": folds, "settings": info,
               "table": table.to_dict("records"), "per_fold": long.to_dict("records")}, out / "method_comparison.json")
    atomic_write_text(out / "method_comparison.md", comparison_markdown(table, raters, fold_lists))
    logger.info(f"written: {out / 'method_comparison.md'}, .csv, _per_fold.csv, .json and {out / 'figures'}")
    return table
