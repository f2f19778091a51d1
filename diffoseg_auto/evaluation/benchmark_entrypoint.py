"""``diffoseg_benchmark``: tables and plots over datasets x configurations x folds.

Runs the four steps: collect the validation summaries the trainer wrote (benchmark_collect),
aggregate them over folds with an inter-rater reference row per dataset (benchmark_aggregate;
leave-one-rater-out on the raw labels, see inter_rater.py), write benchmark.csv / benchmark.md
(benchmark_tables) and benchmark.png plus, with --figures, sample grids and the reliability diagram
(benchmark_figures).
With several trainers (``-tr A B C``) or ``--compare`` it writes the method comparison instead: the same
steps for methods x metrics on the folds' held-out cases (method_comparison: collect and aggregate,
with the trivial and inter-rater rows; comparison_report: tables; comparison_figures: figures).
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from diffoseg_auto.evaluation.benchmark_aggregate import aggregate, inter_rater_rows, with_inter_rater_rows
from diffoseg_auto.evaluation.benchmark_collect import (collect_reliability, collect_results, prediction_folders,
                                                        summary_mode)
from diffoseg_auto.evaluation.benchmark_figures import case_figures, plot_table, reliability_figure
from diffoseg_auto.evaluation.benchmark_tables import benchmark_markdown, write_tables
from diffoseg_auto.evaluation.comparison_report import ComparisonSettings, compare_methods
from diffoseg_auto.evaluation.inter_rater import inter_rater_reference
from diffoseg_auto.evaluation.method_comparison import method_label
from diffoseg_auto.evaluation.metrics import MODES
from diffoseg_auto.paths import raw_root, results_root
from diffoseg_auto.results_layout import trainer_folder
from diffoseg_auto.utilities.command_runner import run_command
from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
from diffoseg_auto.utilities.file_ops import save_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkSettings:
    """What diffoseg_benchmark writes beyond its tables and how it scores the inter-rater row."""
    figures: bool = False               # sample grids and the reliability diagram (figures/)
    inter_rater_details: bool = False   # inter_rater__<dataset>.json (per-case, per-rater leave-one-out)
    mode: str | None = None             # metric mode of the inter-rater row (None: the summaries' mode)


def benchmark(datasets: list[str], configurations: list[str], folds: list[int], output_folder: str | Path | None = None,
              trainer: str = "DiffOSegTrainer", plans: str = "DiffOSegPlans",
              settings: BenchmarkSettings = BenchmarkSettings()) -> pd.DataFrame:
    """Write benchmark.csv / benchmark.md / benchmark.png (and figures/) and return the aggregated table."""
    mode = settings.mode
    res_root = results_root()
    names = [resolve_dataset_name(d) for d in datasets]
    out = Path(output_folder) if output_folder is not None else res_root / "benchmark"
    long, matrices = collect_results(res_root, names, configurations, folds, trainer, plans)
    if mode is None:  # score the raters as the models were scored
        mode = summary_mode(res_root, names, configurations, folds, trainer, plans)
    rows, inter = [], {}
    for ds in names:
        raw = raw_root() / ds
        if not (raw / "dataset.json").is_file():
            logger.warning(f"missing: {raw}/dataset.json -- the inter-rater reference needs the raw labels; row skipped.")
            continue
        try:
            inter[ds] = inter_rater_reference(raw, mode=mode)
        except RuntimeError as e:
            logger.warning(f"inter-rater reference for {ds} skipped: {e}")
            continue
        rows += inter_rater_rows(ds, inter[ds])
    table = with_inter_rater_rows(aggregate(long), rows)
    if table.empty:
        logger.warning("nothing to tabulate: no validation summary and no raw labels were found.")
        return table
    written = write_tables(table, out)
    if settings.inter_rater_details:
        for ds, ref in inter.items():
            save_json(ref, out / f"inter_rater__{ds}.json")
    plot_table(table, matrices, out / "benchmark.png")
    if settings.figures:
        reliability = collect_reliability(res_root, names, configurations, folds, trainer, plans)
        for ds in names:
            for cfg in configurations:
                if (ds, cfg) in reliability:
                    reliability_figure(reliability[(ds, cfg)], out / "figures", ds, cfg, method_label(trainer))
                else:
                    logger.info(f"no reliability diagram for {ds} {cfg}: no Stage I summary with soft output "
                                "(a deterministic method, or summaries written before calibration was scored).")
        for ds in names:
            for cfg in configurations:
                for f in folds:
                    pf = prediction_folders(trainer_folder(ds, trainer, plans, cfg, root=res_root), f)
                    if not pf:
                        logger.warning(f"no validation predictions for {ds} {cfg} fold {f} (samples/, consensus/ or "
                                       "raters/ of its validation folders); run `diffoseg_train ... --val` or "
                                       "diffoseg_predict; figures skipped.")
                        continue
                    case_figures(raw_root() / ds, pf, out / "figures", f"{ds}__{cfg}__fold{f}")
    logger.info(f"written: {', '.join(map(str, written))}, {out / 'benchmark.png'}")
    return table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Tables (csv, md) and plots of the validation results of trained models "
                                            "over datasets, configurations and folds, with an inter-rater reference row.")
    p.add_argument("-d", nargs="+", required=True, help="dataset ids or names")
    p.add_argument("-c", nargs="+", required=True, help="configurations, e.g. 2d 3d_fullres")
    p.add_argument("-f", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="folds (default: 0 1 2 3 4)")
    p.add_argument("-o", default=None, help="output folder (default: $diffoseg_results/benchmark)")
    p.add_argument("-tr", nargs="+", default=["DiffOSegTrainer"],
                   help="trainer name(s) (default: DiffOSegTrainer). Several (e.g. -tr DiffOSegTrainer "
                        "ConsensusUNetTrainer MultiHeadUNetTrainer ProbUNetTrainer) write the method comparison "
                        "(methods x metrics with the trivial and inter-rater rows, method_comparison.md/.csv/.json, "
                        "bar charts); see documentation/benchmarking.md")
    p.add_argument("-p", default="DiffOSegPlans", help="plans identifier (default: DiffOSegPlans)")
    p.add_argument("--figures", action="store_true",
                   help="also draw sample grids (image, raters, samples, per-rater predictions) for a few validation "
                        "cases, and a reliability diagram per method (figures/reliability__<dataset>__<cfg>__<method>.png)")
    p.add_argument("--inter_rater", action="store_true",
                   help="also write inter_rater__<dataset>.json with per-case and per-rater leave-one-out agreement "
                        "(the inter-rater row itself is always in the tables)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="metric mode of the inter-rater row (default: the mode of the validation summaries, else strict)")
    p.add_argument("--compare", action="store_true", help="the method comparison also for a single -tr")
    p.add_argument("--learning_curves", action="store_true",
                   help="also write learning_curves.csv/.md/.png: held-out GED, Dice_soft and per-rater Dice of every "
                        "-tr against training compute, from the predictions of each fold's learning-curve checkpoints "
                        "in <fold>/learning_curve/ (documentation/benchmarking.md)")
    return p


def learning_curves(datasets: Sequence[str], configurations: Sequence[str], folds: list[int], trainers: list[str],
                    output_folder: str | Path | None, plans: str) -> None:
    from diffoseg_auto.evaluation.learning_curves import curves_markdown, write_learning_curves

    for d in datasets:
        ds = resolve_dataset_name(d)
        for cfg in configurations:
            base = Path(output_folder) if output_folder is not None else results_root() / "benchmark"
            out = base / "learning_curves" / f"{ds}__{cfg}" if len(datasets) * len(configurations) > 1 else base
            table = write_learning_curves(ds, cfg, folds, trainers, raw_root() / ds / "labelsTr", out, plans)
            if not table.empty:
                print(f"{ds} {cfg}: learning curves\n{curves_markdown(table)}")


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.learning_curves:
        learning_curves(args.d, args.c, args.f, args.tr, args.o, args.p)
    if len(args.tr) > 1 or args.compare:
        compare_methods(args.d, args.c, args.f, args.tr, args.o, args.p, ComparisonSettings(figures=args.figures))
        return
    table = benchmark(args.d, args.c, args.f, args.o, args.tr[0], args.p,
                      BenchmarkSettings(figures=args.figures, inter_rater_details=args.inter_rater, mode=args.mode))
    if not table.empty:
        print(benchmark_markdown(table))


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_benchmark", main))
