"""Learning curves: held-out metrics of every method against training compute, from the checkpoints a stage keeps
at fixed fractions of its schedule (results_layout.PROGRESS_FRACTIONS).

A point is one checkpoint whose held-out predictions lie in ``<fold>/learning_curve/<checkpoint stem>/``
(diffoseg_predict -chk <checkpoint> on the fold's validation images; benchmarks/quality/real_data.py compare --curves
writes them). Its x value is the training compute up to it: the seconds of the epochs in the checkpoint's log,
plus, for a Stage II point, all of Stage I (the run's device seconds; a resumed run counts only its epochs, not
the pause). Each point is scored against the raw labels in strict mode (cached in the folder's summary.json).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from diffoseg_auto.evaluation.evaluate_entrypoint import evaluate_folder
from diffoseg_auto.dataset.splits_file import fold_validation_cases
from diffoseg_auto.evaluation.method_comparison import method_label
from diffoseg_auto.io.checkpoint_io import epoch_durations, load_checkpoint
from diffoseg_auto.paths import preprocessed_dataset_folder
from diffoseg_auto.results_layout import (CHECKPOINT_FINAL, PROGRESS_FRACTIONS, SUMMARY, checkpoint_path,
                                          learning_curve_folder, progress_checkpoint_name, stage_folder,
                                          trainer_folder)
from diffoseg_auto.evaluation.summary_file import load_summary
from diffoseg_auto.utilities.file_ops import atomic_write_text

logger = logging.getLogger(__name__)

CURVE_METRICS = ("GED", "Dice_soft", "Dice_rater_strict")
CURVE_COLUMNS = ["method", "fold", "stage", "fraction", "epoch", "seconds", "metric", "value"]


def epoch_seconds(logging_state: dict) -> float:
    """Seconds in a checkpoint's epochs (training and validation-loss batches; not the pauses of a resume)."""
    return float(sum(epoch_durations(logging_state)))


def curve_points(trainer_dir: Path, fold: int) -> list[dict]:
    """The fold's learning-curve checkpoints in training order: stage, fraction, epoch, cumulative seconds."""
    points, stage1_total = [], 0.0
    final1 = checkpoint_path(trainer_dir, fold, 1, CHECKPOINT_FINAL)
    if final1.is_file():
        stage1_total = epoch_seconds(load_checkpoint(final1)["logging"])
    for stage in (1, 2):
        folder = stage_folder(trainer_dir, fold, stage)
        if not folder.is_dir():
            continue
        for f in PROGRESS_FRACTIONS:
            path = folder / progress_checkpoint_name(stage, f)
            if not path.is_file():
                continue
            ck = load_checkpoint(path)
            points.append({"checkpoint": path.name, "stage": stage, "fraction": f, "epoch": int(ck["epoch"]),
                           "seconds": epoch_seconds(ck["logging"]) + (stage1_total if stage == 2 else 0.0)})
    return points


def collect_curves(dataset: str, configuration: str, folds: list[int], trainers: list[str], labels_folder: Path,
                   plans: str = "DiffOSegPlans") -> pd.DataFrame:
    """Long table: method, fold, stage, fraction, epoch, seconds, metric, value (points with predictions only)."""
    rows = []
    for trainer in trainers:
        folder = trainer_folder(dataset, trainer, plans, configuration)
        for fold in folds:
            held_out = None  # read once per fold, only where a point is scored
            for p in curve_points(folder, fold):
                pred = learning_curve_folder(folder, fold, p["checkpoint"])
                if not pred.is_dir():
                    continue
                summary_file = pred / SUMMARY
                if summary_file.is_file():
                    summary = load_summary(summary_file)
                else:
                    if held_out is None:
                        held_out = fold_validation_cases(preprocessed_dataset_folder(dataset), fold)
                    summary = evaluate_folder(labels_folder, pred, summary_file, expected_cases=held_out)
                for m in CURVE_METRICS:
                    v = summary["metrics"].get(m)
                    rows.append({"method": method_label(trainer), "fold": fold, **{k: p[k] for k in
                                 ("stage", "fraction", "epoch", "seconds")}, "metric": m,
                                 "value": np.nan if v is None else float(v)})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def aggregate_curves(long: pd.DataFrame) -> pd.DataFrame:
    """One row per method and point (stage, fraction): mean seconds, and mean, std and count of each metric over
    the folds that have the point."""
    if long.empty:
        return pd.DataFrame()
    g = long.groupby(["method", "stage", "fraction", "metric"])
    t = g.agg(seconds=("seconds", "mean"), mean=("value", "mean"), std=("value", "std"),
              folds=("value", "count")).reset_index()
    wide = t.pivot_table(index=["method", "stage", "fraction"], columns="metric", values=["mean", "std"])
    wide.columns = [f"{m}" if s == "mean" else f"{m}_std" for s, m in wide.columns]
    secs = t.groupby(["method", "stage", "fraction"])[["seconds", "folds"]].max()
    return secs.join(wide).reset_index().sort_values(["method", "seconds"]).reset_index(drop=True)


def curves_markdown(table: pd.DataFrame) -> str:
    metrics = [m for m in CURVE_METRICS if m in table.columns]
    head = "| method | stage | fraction | training s | folds | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (5 + len(metrics))]
    for _, r in table.iterrows():
        cells = []
        for m in metrics:
            v, s = r[m], r.get(f"{m}_std", np.nan)
            cells.append("n/a" if not np.isfinite(v) else f"{v:.3f}" + ("" if not np.isfinite(s) else f" ± {s:.3f}"))
        lines.append(f"| {r['method']} | {int(r['stage'])} | {r['fraction']:g} | {r['seconds']:.0f} | "
                     f"{int(r['folds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(table: pd.DataFrame, path: Path, title: str = "") -> None:
    """One panel per metric, held-out value against training seconds, one line per method (same axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from diffoseg_auto.utilities.file_ops import atomic_write

    metrics = [m for m in CURVE_METRICS if m in table.columns]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for method, t in table.groupby("method", sort=False):
            t = t[np.isfinite(t[m])]
            if t.empty:
                continue
            ax.errorbar(t["seconds"], t[m], yerr=t[f"{m}_std"].fillna(0) if f"{m}_std" in t else None, marker="o",
                        capsize=2, label=method)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap over one decade
        ax.set_xlabel("training compute [s]")
        ax.set_ylabel(f"held-out {m}")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def write_learning_curves(dataset: str, configuration: str, folds: list[int], trainers: list[str], labels_folder: Path,
                          out: Path, plans: str = "DiffOSegPlans") -> pd.DataFrame:
    """learning_curves.csv / .md / .png in ``out``; returns the aggregated table (empty: no point predicted)."""
    table = aggregate_curves(collect_curves(dataset, configuration, folds, trainers, labels_folder, plans))
    if table.empty:
        logger.warning(f"no learning-curve predictions for {dataset} {configuration}: predict the fold's checkpoints "
                       "checkpoint_stage<S>_at_<F>.pth into <fold>/learning_curve/<checkpoint stem>/ first")
        return table
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "learning_curves.csv", table.to_csv(index=False))
    atomic_write_text(out / "learning_curves.md", curves_markdown(table))
    plot_curves(table, out / "learning_curves.png", f"{dataset} {configuration}, folds {folds}")
    return table
