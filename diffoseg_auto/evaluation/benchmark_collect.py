"""Benchmark step 1, collect: read the validation summaries the trainer wrote into one long table.

Per fold, ``results_layout.validation_summary(model_folder, fold, 1)`` (sample metrics) and
``(..., 2)`` (per-rater metrics) are merged; a Stage II key that also exists in Stage I becomes
"stage2/<key>". Missing summaries are reported (logging) and skipped, never filled in. A soft metric
that a summary reports as "n/a" (Uncertainty_NCC of constant uncertainty) becomes a NaN value, which the tables show as "n/a".
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from diffoseg_auto.evaluation.calibration import NOT_AVAILABLE, RELIABILITY_KEY, pool_reliability
from diffoseg_auto.results_layout import parse_trainer_folder_name, trainer_folder, validation_folder, validation_summary
from diffoseg_auto.evaluation.summary_file import load_summary

logger = logging.getLogger(__name__)

LONG_COLUMNS = ["dataset", "configuration", "fold", "metric", "value"]


def load_fold_metrics(model_folder: str | Path, fold: int) -> tuple[dict, dict | None] | None:
    """Merged Stage I + Stage II metrics of one fold, and the Stage II summary (for the matrix).

    Returns None when neither summary exists. Each missing file is reported as a warning.
    """
    model_folder = Path(model_folder)
    summaries = {}
    for stage in (1, 2):
        path = validation_summary(model_folder, fold, stage)
        if path.is_file():
            summaries[stage] = load_summary(path)
        else:
            trainer, plans, cfg = parse_trainer_folder_name(model_folder.name)
            logger.warning(f"missing: {path} -- create it with `diffoseg_train {model_folder.parent.name} {cfg} {fold} "
                           f"-tr {trainer} -p {plans} --val` (Stage {'I' if stage == 1 else 'II'} validation); "
                           "skipped, no numbers are made up.")
    if not summaries:
        return None
    merged = dict(summaries.get(1, {}).get("metrics", {}))
    for k, v in summaries.get(2, {}).get("metrics", {}).items():
        merged[f"stage2/{k}" if k in merged else k] = v
    return merged, summaries.get(2, summaries.get(1))


def collect_results(results_root: Path, datasets: list[str], configurations: list[str], folds: list[int],
                    trainer: str, plans: str) -> tuple[pd.DataFrame, dict]:
    """Long table (dataset, configuration, fold, metric, value) and per (dataset, configuration) the
    fold-averaged rater x prompt matrix with its rater names."""
    rows, matrices = [], {}
    for ds in datasets:
        for cfg in configurations:
            model_folder = trainer_folder(ds, trainer, plans, cfg, root=results_root)
            if not model_folder.is_dir():
                logger.warning(f"missing: {model_folder} -- train it with `diffoseg_train {ds} {cfg} <fold>`; skipped.")
                continue
            mats, raters = [], None
            for f in folds:
                got = load_fold_metrics(model_folder, f)
                if got is None:
                    continue
                metrics, summary = got
                rows += [{"dataset": ds, "configuration": cfg, "fold": f, "metric": k,
                          "value": np.nan if v == NOT_AVAILABLE else v} for k, v in metrics.items()
                         if v == NOT_AVAILABLE or (isinstance(v, (int, float)) and not isinstance(v, bool))]
                if summary.get("rater_prompt_dice_matrix") is not None:
                    mats.append(np.asarray(summary["rater_prompt_dice_matrix"], dtype=float))
                    raters = summary.get("raters")
            if mats:
                matrices[(ds, cfg)] = (np.nanmean(np.stack(mats), 0), raters)
    df = pd.DataFrame(rows, columns=LONG_COLUMNS)
    df["value"] = df["value"].astype(float)
    return df, matrices


def collect_reliability(results_root: Path, datasets: list[str], configurations: list[str], folds: list[int],
                        trainer: str, plans: str) -> dict[tuple[str, str], dict]:
    """(dataset, configuration) -> reliability bins of the Stage I validation summaries (the samples), pooled
    over the folds that have them; a configuration without soft output has none."""
    out = {}
    for ds in datasets:
        for cfg in configurations:
            model_folder = trainer_folder(ds, trainer, plans, cfg, root=results_root)
            paths = [validation_summary(model_folder, f, 1) for f in folds]
            pooled = pool_reliability([load_summary(p).get(RELIABILITY_KEY) for p in paths if p.is_file()])
            if pooled is not None:
                out[(ds, cfg)] = pooled
    return out


def summary_mode(results_root: Path, datasets: list[str], configurations: list[str], folds: list[int],
                 trainer: str, plans: str, default: str = "strict") -> str:
    """The metric mode the validation summaries were scored in (the last one found), else ``default``."""
    mode = default
    for ds in datasets:
        for cfg in configurations:
            model_folder = trainer_folder(ds, trainer, plans, cfg, root=results_root)
            for f in folds:
                for stage in (1, 2):
                    p = validation_summary(model_folder, f, stage)
                    if p.is_file():
                        mode = load_summary(p).get("mode", mode)
    return mode


def prediction_folders(model_folder: Path, fold: int) -> list[Path]:
    """The fold's validation prediction folders: Stage I (samples, consensus), then Stage II (raters)."""
    found = []
    for stage in (1, 2):
        f = validation_folder(model_folder, fold, stage)
        if any((f / sub).is_dir() for sub in ("samples", "consensus", "raters")):
            found.append(f)
    return found
