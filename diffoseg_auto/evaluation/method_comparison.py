"""Methods x metrics: trained methods (``-tr A B C``), trivial predictors and the raters themselves,
scored on the same held-out cases of every fold, mean ± std over folds.

For each dataset, configuration and fold the held-out cases are the fold's ``val`` cases
(preprocessed splits_final.json) that every method predicted. A method's predictions are read from
its trainer folder (results_layout): the fold's ``val_predictions_folder`` (diffoseg_predict on the
fold's validation images; preferred), else the trainer's own validation exports
(``validation_folder`` of Stage I and Stage II)
(samples/, consensus/, raters/ in the raw images' geometry) and scored against the raw labels in
both metric modes (strict, dpersona). Rows added on the same cases:

- ``all-empty``: N empty samples, every rater predicted empty;
- ``raters' majority repeated``: the majority vote of the case's annotating raters (ties ->
  background) as all N samples and as every rater's prediction (a perfect deterministic consensus);
- ``raters' STAPLE repeated``: the same with the raters' STAPLE consensus (staple.py: SimpleITK's STAPLE
  filters, the classic label fusion of multi-rater papers) in place of the majority vote;
- ``inter-rater``: leave-one-rater-out agreement of the raters (see inter_rater.py).

``Rater_area_spearman`` (strict rows only, per fold): do a method's per-rater predictions rank the raters
by foreground area as their own masks do? Spearman's rho between each rater's mean predicted foreground
area over the fold's cases and the mean area of the masks that rater drew (cases they annotated); NaN
when either side is constant (a method that gives every rater the same mask has no ranking).

``Dice_consensus_majority``: the Dice of the method's consensus label map (consensus/) to the case's raters'
majority vote, a plain segmentation-quality column (1 for the majority row by construction; NaN for the
inter-rater row, which has no consensus).

``ECE``, ``Brier``, ``Uncertainty_NCC`` (calibration.py, the same in both modes): per fold over the fold's
cases, for every row with a prediction (a deterministic method and the trivial rows included: their p is 0 or
1, and their ECE and Brier show that overconfidence); Uncertainty_NCC is NaN (shown "n/a") for a row without
soft output (constant uncertainty: the correlation is undefined). The reliability bins of every row are pooled
over the cases of all folds for its diagram.

N is the plans' ``diffusion.num_samples`` of the configuration.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from diffoseg_auto.dataset.raw_dataset import RawDataset
from diffoseg_auto.dataset.splits_file import fold_validation_cases
from diffoseg_auto.evaluation.benchmark_collect import prediction_folders as validation_prediction_folders
from diffoseg_auto.evaluation.benchmark_tables import format_cell
from diffoseg_auto.evaluation.calibration import NCC_LEGEND, RELIABILITY_KEY, SOFT_METRICS, mark_constant_uncertainty, pool_reliability
from diffoseg_auto.evaluation.inter_rater import inter_rater_reference
from diffoseg_auto.evaluation.metrics import MODES, CaseScoring, evaluate_case, majority_vote
from diffoseg_auto.evaluation.prediction_folder import (CasePrediction, list_predicted_cases, load_prediction,
                                                        load_reference)
from diffoseg_auto.evaluation.staple import staple_consensus
from diffoseg_auto.results_layout import trainer_folder, val_predictions_folder

logger = logging.getLogger(__name__)

EMPTY, MAJORITY, INTER_RATER = "all-empty", "raters' majority repeated", "inter-rater"
STAPLE = "raters' STAPLE repeated"
AREA_SPEARMAN = "Rater_area_spearman"
MAJORITY_DICE = "Dice_consensus_majority"
METRICS = ("GED", "Dice_soft", "Dice_match", "Dice_max", "Dice_rater_strict", "Dice_rater_dpersona", AREA_SPEARMAN,
           MAJORITY_DICE, *SOFT_METRICS)
COLUMNS = ["dataset", "configuration", "method", "fold", "num_cases", "mode", "metric", "value"]


def method_label(trainer: str) -> str:
    """'ProbUNetTrainer' -> 'ProbUNet' (the row name)."""
    return trainer.removesuffix("Trainer") or trainer


def prediction_folders(model_folder: Path, fold: int) -> list[Path]:
    """The fold's prediction folders, preferred first (see the module docstring); [] when none exists."""
    preferred = val_predictions_folder(model_folder, fold)
    if preferred.is_dir():
        return [preferred]
    return validation_prediction_folders(Path(model_folder), fold)


def load_method_case(ds: RawDataset, folders: list[Path], case: str, ref_props: dict,
                     ref_file: Path) -> CasePrediction:
    """One case's prediction; each of its parts from the first folder that has it."""
    found: list = [None] * len(CasePrediction._fields)
    for f in folders:
        got = load_prediction(f, ds.raters, case, ds.file_ending, ref_props, ref_file)
        found = [a if a is not None else b for a, b in zip(found, got)]
    return CasePrediction(*found)


def trivial_predictions(labels: np.ndarray, mask: np.ndarray, num_classes: int, num_samples: int) -> dict[str, tuple]:
    """Row name -> (samples (N,*S), consensus (*S), rater predictions (R,*S)) of the trivial predictors."""
    empty = np.zeros(labels.shape[1:], np.uint8)
    majority = majority_vote(labels[mask], num_classes)
    staple = staple_consensus(labels[mask], num_classes)
    return {name: CasePrediction(np.repeat(m[None], num_samples, 0), m, np.repeat(m[None], labels.shape[0], 0))
            for name, m in ((EMPTY, empty), (MAJORITY, majority), (STAPLE, staple))}


def _mean_over_cases(per_case: list[dict]) -> dict[str, float]:
    names = dict.fromkeys(k for d in per_case for k, v in d.items() if isinstance(v, float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {k: float(np.nanmean([d.get(k, np.nan) for d in per_case])) for k in names}


def area_spearman(predicted: np.ndarray, annotated: np.ndarray) -> float:
    """Spearman's rho of two per-rater area vectors (NaN where a side is constant or has NaNs)."""
    ok = np.isfinite(predicted) & np.isfinite(annotated)
    p, a = predicted[ok], annotated[ok]
    if len(p) < 2 or np.ptp(p) == 0 or np.ptp(a) == 0:
        return float("nan")
    return float(spearmanr(p, a).statistic)


def score_fold(ds: RawDataset, method_folders: dict[str, list[Path]], cases: list[str], num_samples: int,
               modes: tuple[str, ...] = MODES, split: str = "Tr",
               per_case_out: dict | None = None) -> tuple[dict[tuple[str, str], dict[str, float]], dict[str, dict]]:
    """(row, mode) -> metrics averaged over ``cases`` for every method, the trivial rows and the inter-rater row;
    and row -> reliability bins pooled over ``cases`` (every row but the inter-rater one). ``split``: the labels scored
    against (labelsTr; "Ts": a held-out test split's labelsTs). ``per_case_out``, when given, receives
    (row, mode) -> the per-case values behind the means ({"case", metric: float}; the inter-rater row: the cases
    with two raters), for standard errors over cases and paired differences."""
    per_case: dict[tuple[str, str], list[dict]] = {}
    # per row: (cases, raters) predicted foreground areas; and the raters' own areas (NaN: not annotated)
    predicted_area: dict[str, list[np.ndarray]] = {}
    annotated_area: list[np.ndarray] = []
    for case in cases:
        labels, mask, props, ref_file = load_reference(ds.labels_folder(split), ds.raters, case, ds.file_ending)
        rows = {m: load_method_case(ds, folders, case, props, ref_file) for m, folders in method_folders.items()}
        trivial = trivial_predictions(labels, mask, ds.num_classes, num_samples)
        rows.update(trivial)
        annotated_area.append(np.where(mask, (labels > 0).reshape(len(labels), -1).sum(1), np.nan))
        for name, pred in rows.items():
            raters = pred.rater_predictions
            if raters is not None:
                predicted_area.setdefault(name, []).append((raters > 0).reshape(len(raters), -1).sum(1).astype(float))
            for mode in modes:
                res = evaluate_case(pred.samples, labels, mask, ds.num_classes, rater_predictions=raters,
                                    consensus=pred.consensus, foreground_probability=pred.foreground_probability,
                                    scoring=CaseScoring(mode, calibration=True))
                per_case.setdefault((name, mode), []).append(res)
    out, reliability = {}, {}
    for (name, mode), results in per_case.items():
        results = mark_constant_uncertainty(results, float("nan"))
        out[(name, mode)] = _mean_over_cases(results)
        if per_case_out is not None:
            per_case_out[(name, mode)] = [{"case": c, **{k: v for k, v in d.items() if isinstance(v, float)}}
                                          for c, d in zip(cases, results)]
        if mode == modes[0]:  # the bins do not depend on the mode
            pooled = pool_reliability([d.get(RELIABILITY_KEY) for d in results])
            if pooled is not None:
                reliability[name] = pooled
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a rater who annotated none of the cases
        reference = np.nanmean(np.stack(annotated_area), 0)
    for name, areas in predicted_area.items():
        if len(areas) == len(cases) and "strict" in modes:
            out[(name, "strict")][AREA_SPEARMAN] = area_spearman(np.mean(np.stack(areas), 0), reference)
    for mode in modes:
        try:
            inter = inter_rater_reference(ds.folder, cases=cases, mode=mode, split=split)
            out[(INTER_RATER, mode)] = inter["metrics"]
            if per_case_out is not None:
                per_case_out[(INTER_RATER, mode)] = inter["per_case"]
        except RuntimeError:  # no case with two raters: no inter-rater row
            pass
    return out, reliability


def collect(raw_folder: Path, preprocessed_folder: Path, results_folder: Path, configuration: str, folds: list[int],
            trainers: list[str], plans: str, num_samples: int) -> tuple[pd.DataFrame, dict[int, list[str]], dict[str, dict]]:
    """Long table (COLUMNS) of one dataset and configuration (every row x fold x mode x metric), the
    cases scored per fold and per row its reliability bins pooled over those cases."""
    ds = RawDataset(Path(raw_folder))
    records, scored, bins = [], {}, {}
    for fold in folds:
        method_folders, predicted = {}, []
        for tr in trainers:
            model_folder = trainer_folder(ds.name, tr, plans, configuration, root=results_folder)
            folders = prediction_folders(model_folder, fold)
            if not folders:
                logger.warning(f"missing: predictions of {tr} fold {fold} ({val_predictions_folder(model_folder, fold)}, "
                               "or the trainer's validation exports); row skipped for this fold, no numbers are made up.")
                continue
            method_folders[method_label(tr)] = folders
            predicted.append({c for f in folders for c in list_predicted_cases(f, ds.file_ending)})
        cases = [c for c in fold_validation_cases(preprocessed_folder, fold) if all(c in p for p in predicted)]
        if not cases:
            logger.warning(f"fold {fold}: no validation case predicted by every method; fold skipped.")
            continue
        scored[fold] = cases
        metrics_by_row, reliability = score_fold(ds, method_folders, cases, num_samples)
        for (row, mode), metrics in metrics_by_row.items():
            records += [{"dataset": ds.name, "configuration": configuration, "method": row, "fold": fold,
                         "num_cases": len(cases), "mode": mode, "metric": k, "value": v} for k, v in metrics.items()]
        for row, b in reliability.items():
            bins[row] = pool_reliability([bins.get(row), b])
    return pd.DataFrame(records, columns=COLUMNS), scored, bins


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1; NaN for one fold) over folds per dataset, configuration, method, mode, metric.

    NaN values are left out; a soft metric that is NaN in every fold keeps its row (mean NaN, num_folds 0),
    which the tables show as "n/a"."""
    keys = ["dataset", "configuration", "method", "mode", "metric"]
    if long.empty:
        return pd.DataFrame(columns=keys + ["mean", "std", "num_folds"])
    g = long[long["value"].notna() | long["metric"].isin(SOFT_METRICS)].groupby(keys, sort=False)["value"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "num_folds": g.count()}).reset_index()


def comparison_markdown(table: pd.DataFrame, raters: dict[str, list[str]], folds: dict[str, list[int]],
                        modes: tuple[str, ...] = MODES, headings: bool = True) -> str:
    """Per dataset and configuration: a methods x metrics table per mode and the strict per-rater Dice.
    ``headings=False`` gives the tables under plain captions, for embedding in a larger document."""
    def heading(level: int, text: str) -> str:
        return f"{'#' * level} {text}\n" if headings else f"{text}:\n"

    parts = ([heading(1, "Method comparison")] if headings else []) + [
        "Mean ± sample std over folds of the per-fold means over the fold's held-out cases; every row is scored "
        "on the same cases. Metric definitions: documentation/benchmarking.md. " + NCC_LEGEND + "\n"]
    for (ds, cfg), sub in table.groupby(["dataset", "configuration"], sort=False):
        order = list(dict.fromkeys(sub["method"]))
        parts.append(heading(2, f"{ds}, {cfg} (folds {', '.join(map(str, folds.get(ds, [])))})"))
        for mode in modes:
            m = sub[(sub["mode"] == mode) & sub["metric"].isin(METRICS)]
            parts.append(heading(3, f"{mode} mode"))
            parts.append(wide_markdown(m, order, list(METRICS), lambda k: k) + "\n")
        names = raters.get(ds, [])
        per_rater = [f"Dice_rater_strict/{k}" for k in range(len(names))]
        m = sub[(sub["mode"] == "strict") & sub["metric"].isin(per_rater)]
        if not m.empty:
            parts.append(heading(3, "per-rater Dice (strict)"))
            parts.append(wide_markdown(m, order, per_rater, lambda k: names[int(k.rsplit("/", 1)[1])]) + "\n")
    return "\n".join(parts)


def wide_markdown(sub: pd.DataFrame, methods: list[str], metrics: list[str], header, spread: str = "std") -> str:
    """``methods`` x ``metrics`` of a long table as 'mean ± <its ``spread`` column>' cells (format_cell);
    ``header(metric)`` names a column; metrics and methods without any value are left out."""
    cells = {(r.method, r.metric): format_cell(r.mean, getattr(r, spread), r.metric) for r in sub.itertuples()}
    present = [k for k in metrics if any((m, k) in cells for m in methods)]
    lines = ["| method | " + " | ".join(header(k) for k in present) + " |", "|---|" + "---:|" * len(present)]
    for m in methods:
        if any((m, k) in cells for k in present):
            lines.append(f"| {m} | " + " | ".join(cells.get((m, k), "") for k in present) + " |")
    return "\n".join(lines)
