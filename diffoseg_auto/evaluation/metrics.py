"""Multi-rater segmentation metrics (pure numpy, vectorised over all pairs).

Two modes (see documentation/benchmarking.md):

- ``strict``: the definitions as intended. Empty vs empty counts as identical (Dice 1, IoU 1,
  GED distance 0); per-rater Dice scores rater k's prompt against rater k's own mask.
- ``dpersona``: reproduces the metric code published with D-Persona and reused by the official
  DiffOSeg code, quirks included, so numbers can be set beside published tables: IoU adds 1e-8
  to the denominator (empty vs empty -> IoU 0, distance 1), Dice smooths with 1e-8 in numerator
  and denominator (empty vs empty -> 1, empty vs non-empty -> ~1e-10), and the per-rater Dice
  is Hungarian-matched (in Stage II after tiling the predictions, i.e. best prediction per rater).

Binary metric functions take boolean stacks ``(N, *S)``; ``evaluate_case`` turns label maps into
one binary problem per foreground class (class c vs rest). Missing raters (``rater_mask`` False)
are dropped, never scored as empty masks.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from diffoseg_auto.evaluation.calibration import (NOT_AVAILABLE, RELIABILITY_KEY, SOFT_METRICS, SOFT_OUTPUT_KEY,
                                                  calibration_metrics, mark_constant_uncertainty, pool_reliability)

MODES = ("strict", "dpersona")
DPERSONA_SMOOTH = 1e-8
SOFT_DICE_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)
# float32 matmul counts are exact below 2**24; chunking the voxel axis keeps them exact for any size
_CHUNK = 1 << 22


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown metric mode '{mode}'. Use one of {MODES}.")


def _flat_bool(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{name}: expected a stack (N, *S) of masks, got shape {x.shape}")
    return x.reshape(x.shape[0], -1).astype(bool, copy=False)


def _counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersection matrix (N, M) and the foreground sizes of a (N,) and b (M,), as float64."""
    fa, fb = _flat_bool(a, "a"), _flat_bool(b, "b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"mask stacks differ in spatial size: {np.asarray(a).shape[1:]} vs {np.asarray(b).shape[1:]}")
    inter = np.zeros((fa.shape[0], fb.shape[0]), dtype=np.float64)
    for s in range(0, fa.shape[1], _CHUNK):
        inter += fa[:, s:s + _CHUNK].astype(np.float32) @ fb[:, s:s + _CHUNK].astype(np.float32).T
    return inter, fa.sum(1).astype(np.float64), fb.sum(1).astype(np.float64)


def dice_matrix(a: np.ndarray, b: np.ndarray, mode: str = "strict") -> np.ndarray:
    """Dice of every pair: a (N,*S) bool, b (M,*S) bool -> (N, M)."""
    _check_mode(mode)
    inter, sa, sb = _counts(a, b)
    denom = sa[:, None] + sb[None, :]
    if mode == "dpersona":
        return (2.0 * inter + DPERSONA_SMOOTH) / (denom + DPERSONA_SMOOTH)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 2.0 * inter / denom
    d[denom == 0] = 1.0  # both empty: identical
    return d


def iou_matrix(a: np.ndarray, b: np.ndarray, mode: str = "strict") -> np.ndarray:
    """IoU of every pair: a (N,*S) bool, b (M,*S) bool -> (N, M)."""
    _check_mode(mode)
    inter, sa, sb = _counts(a, b)
    union = sa[:, None] + sb[None, :] - inter
    if mode == "dpersona":
        return inter / (union + DPERSONA_SMOOTH)  # both empty -> 0 (the reference's quirk)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    iou[union == 0] = 1.0
    return iou


def ged(samples: np.ndarray, raters: np.ndarray, mode: str = "strict") -> float:
    """Generalised energy distance with d = 1 - IoU; within-set means include self pairs."""
    cross = np.mean(1.0 - iou_matrix(samples, raters, mode))
    within_s = np.mean(1.0 - iou_matrix(samples, samples, mode))
    within_r = np.mean(1.0 - iou_matrix(raters, raters, mode))
    return float(2.0 * cross - within_s - within_r)


def _dice_pair(a: np.ndarray, b: np.ndarray, mode: str) -> float:
    return float(dice_matrix(a[None], b[None], mode)[0, 0])


def dice_soft(samples: np.ndarray, raters: np.ndarray, mode: str = "strict",
              thresholds: Sequence[float] = SOFT_DICE_THRESHOLDS) -> float:
    """Mean over thresholds t of Dice(mean(samples) > t, mean(raters) > t)."""
    _check_mode(mode)
    fs, fr = _flat_bool(samples, "samples"), _flat_bool(raters, "raters")
    # count / n is correctly rounded, so a fraction equal to a threshold compares as in the reference
    p_mean = fs.sum(0) / fs.shape[0]
    r_mean = fr.sum(0) / fr.shape[0]
    return float(np.mean([_dice_pair(p_mean > t, r_mean > t, mode) for t in thresholds]))


def dice_max(samples: np.ndarray, raters: np.ndarray, mode: str = "strict") -> float:
    """Mean over samples of the Dice with the best-matching rater."""
    return float(dice_matrix(samples, raters, mode).max(1).mean())


def dice_max_reverse(samples: np.ndarray, raters: np.ndarray, mode: str = "strict") -> float:
    """Mean over raters of the Dice with the best-matching sample."""
    return float(dice_matrix(samples, raters, mode).max(0).mean())


def _hungarian(dm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one assignment on cost 1 - Dice; dm is (rows, cols)."""
    return linear_sum_assignment(1.0 - dm)


def dice_match(samples: np.ndarray, raters: np.ndarray, mode: str = "strict") -> float:
    """Mean Dice of the optimal one-to-one sample/rater matching (min(N, R) pairs)."""
    dm = dice_matrix(raters, samples, mode)
    rows, cols = _hungarian(dm)
    return float(dm[rows, cols].mean())


def _available(raters: np.ndarray, rater_mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(rater_mask, dtype=bool)
    if mask.shape != (np.asarray(raters).shape[0],):
        raise ValueError(f"rater_mask has shape {mask.shape}, expected ({np.asarray(raters).shape[0]},) (one flag per rater)")
    return mask


def per_rater_dice_strict(rater_predictions: np.ndarray, raters: np.ndarray, rater_mask: np.ndarray) -> np.ndarray:
    """(R,) Dice(prediction for prompt k, rater k's mask); NaN where rater k is missing."""
    mask = _available(raters, rater_mask)
    fp, fr = _flat_bool(rater_predictions, "rater_predictions"), _flat_bool(raters, "raters")
    if fp.shape != fr.shape:
        raise ValueError(f"rater_predictions {np.asarray(rater_predictions).shape} and raters {np.asarray(raters).shape} must have the same shape")
    inter = np.logical_and(fp, fr).sum(1).astype(np.float64)
    denom = fp.sum(1).astype(np.float64) + fr.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 2.0 * inter / denom
    d[denom == 0] = 1.0
    d[~mask] = np.nan
    return d


def per_rater_dice_dpersona(rater_predictions: np.ndarray, raters: np.ndarray, rater_mask: np.ndarray,
                            tile: bool = False) -> np.ndarray:
    """(R,) D-Persona's ``dice_each``: Dice of each available rater with its Hungarian-matched prediction.

    ``rater_predictions`` may hold any number of predictions (the reference vectors use samples).
    ``tile=True`` repeats the predictions R times before matching, as the official Stage II
    evaluation does (4 predictions -> 16); every rater then gets its best prediction, which is
    why that number is optimistic. NaN where a rater is missing.
    """
    mask = _available(raters, rater_mask)
    preds = np.asarray(rater_predictions)
    if tile:
        preds = np.concatenate([preds] * len(mask), axis=0)
    out = np.full(len(mask), np.nan)
    if not mask.any():
        return out
    dm = dice_matrix(np.asarray(raters)[mask], preds, "dpersona")
    rows, cols = _hungarian(dm)
    vals = np.full(int(mask.sum()), np.nan)  # a rater left unmatched (fewer predictions) stays NaN
    vals[rows] = dm[rows, cols]
    out[mask] = vals
    return out


def rater_prompt_dice_matrix(rater_predictions: np.ndarray, raters: np.ndarray, rater_mask: np.ndarray) -> np.ndarray:
    """(R_prompt, R_label) strict Dice of each prompt's prediction with each rater; NaN columns for missing raters."""
    mask = _available(raters, rater_mask)
    m = dice_matrix(rater_predictions, raters, "strict")
    m[:, ~mask] = np.nan
    return m


# ----------------------------------------------------------------------------------------------
# case level

SAMPLE_METRICS = ("GED", "Dice_soft", "Dice_max", "Dice_max_reverse", "Dice_match")
_SAMPLE_FNS = {"GED": ged, "Dice_soft": dice_soft, "Dice_max": dice_max,
               "Dice_max_reverse": dice_max_reverse, "Dice_match": dice_match}


def majority_vote(rater_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Label-wise majority of the given raters (R, *S) -> (*S); ties go to the lower class (background)."""
    counts = np.stack([(rater_labels == c).sum(0) for c in range(num_classes)])
    return counts.argmax(0).astype(np.uint8)


def _nanmean(values) -> float:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0 or np.all(np.isnan(arr)):
        return float("nan")
    return float(np.nanmean(arr))


def _binary_case_metrics(c: int, samples, labels, mask, rater_predictions, consensus, num_classes, mode) -> dict:
    """Metrics of foreground class c (c vs rest) for one case."""
    out: dict[str, float] = {}
    avail = labels[mask] == c
    has_raters = avail.shape[0] > 0
    if samples is not None:
        s = samples == c
        for name in SAMPLE_METRICS:
            out[name] = _SAMPLE_FNS[name](s, avail, mode) if has_raters else float("nan")
    if consensus is not None:
        cons = (consensus == c)[None]
        if has_raters:
            out["Dice_consensus_majority"] = float(dice_matrix(cons, (majority_vote(labels[mask], num_classes) == c)[None], mode)[0, 0])
            out["Dice_consensus_soft"] = dice_soft(cons, avail, mode)
        else:
            out["Dice_consensus_majority"] = out["Dice_consensus_soft"] = float("nan")
    if rater_predictions is not None:
        p, r = rater_predictions == c, labels == c
        strict = per_rater_dice_strict(p, r, mask)
        out["Dice_rater_strict"] = _nanmean(strict)
        out["Dice_rater_dpersona"] = _nanmean(per_rater_dice_dpersona(p, r, mask, tile=True))
        for k, v in enumerate(strict):
            out[f"Dice_rater_strict/{k}"] = float(v)
        out["rater_prompt_dice_matrix"] = rater_prompt_dice_matrix(p, r, mask)
    return out


@dataclass(frozen=True)
class CaseScoring:
    """How a case is scored: the metric ``mode`` (MODES) and whether calibration is scored too."""
    mode: str = "strict"
    calibration: bool = False


def evaluate_case(samples: np.ndarray | None, rater_labels: np.ndarray, rater_mask: np.ndarray, num_classes: int,
                  rater_predictions: np.ndarray | None = None, consensus: np.ndarray | None = None,
                  foreground_probability: np.ndarray | None = None, scoring: CaseScoring = CaseScoring()) -> dict:
    """All metrics of one case (2D or 3D, whole-volume) as a flat dict.

    samples (N,*S) int, rater_labels (R,*S) int, rater_mask (R,) bool, rater_predictions (R,*S) int
    (Stage II, one per rater prompt), consensus (*S) int. With K == 2 keys are plain metric names;
    with several foreground classes each metric is reported as "<metric>/class_<c>" and the plain
    name holds the mean over classes. "rater_prompt_dice_matrix" (list of lists, mean over
    foreground classes) is present when rater_predictions are given. ``scoring.calibration`` adds ECE, Brier and
    Uncertainty_NCC of the foreground (any class > 0, once per case), the "soft_output" flag and the
    "reliability" bins (calibration.py) of the samples, else of the consensus as one 0/1 map; summarize turns
    the NCC into "n/a" for a prediction without soft output. ``foreground_probability`` (*S): the method's own
    soft prediction for calibration (a deterministic baseline's softmax), instead of the samples' foreground fraction.
    """
    mode = scoring.mode
    _check_mode(mode)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + at least one class), got {num_classes}")
    labels = np.asarray(rater_labels)
    mask = _available(labels, rater_mask)
    shape = labels.shape[1:]
    for name, arr, exp in (("samples", samples, None), ("rater_predictions", rater_predictions, labels.shape[0]),
                           ("consensus", consensus, None)):
        if arr is None:
            continue
        spatial = np.asarray(arr).shape if name == "consensus" else np.asarray(arr).shape[1:]
        if tuple(spatial) != tuple(shape):
            raise ValueError(f"{name} has spatial shape {tuple(spatial)} but the rater labels have {tuple(shape)}")
        if exp is not None and np.asarray(arr).shape[0] != exp:
            raise ValueError(f"{name} must hold one prediction per rater ({exp}), got {np.asarray(arr).shape[0]}")

    per_class = {c: _binary_case_metrics(c, samples, labels, mask, rater_predictions, consensus, num_classes, mode)
                 for c in range(1, num_classes)}
    out: dict = {}
    names = [k for k in per_class[1] if k != "rater_prompt_dice_matrix"]
    for name in names:
        vals = [per_class[c][name] for c in per_class]
        if num_classes == 2:
            out[name] = vals[0]
        else:
            for c, v in zip(per_class, vals):
                out[f"{name}/class_{c}"] = v
            out[name] = _nanmean(vals)
    if rater_predictions is not None:
        mats = np.stack([per_class[c]["rater_prompt_dice_matrix"] for c in per_class])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns of missing raters stay NaN
            out["rater_prompt_dice_matrix"] = np.nanmean(mats, 0).tolist()
    scored = samples if samples is not None else None if consensus is None else np.asarray(consensus)[None]
    if scoring.calibration and scored is not None:
        out.update(calibration_metrics(scored, labels[mask], foreground_probability=foreground_probability))
    return out


# per-case bookkeeping entries that are not metrics (kept in the per-case table only)
NON_METRIC_KEYS = ("case", "num_raters_available", SOFT_OUTPUT_KEY)


def summarize(per_case: list[dict], raters: list[str], mode: str) -> dict:
    """Mean and std over cases (NaN-aware) of every scalar metric, plus the mean rater x prompt matrix.

    The Uncertainty_NCC of a prediction without soft output (constant uncertainty) is "n/a" in every case and in
    the means; "reliability" holds the reliability bins pooled over the cases (None without calibration).
    """
    per_case = mark_constant_uncertainty(per_case)
    names: list[str] = []
    for d in per_case:
        for k, v in d.items():
            if k not in names and k not in NON_METRIC_KEYS and isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
                names.append(k)
    means, stds = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for k in names:
            vals = np.array([float(d.get(k, np.nan)) for d in per_case], dtype=np.float64)
            means[k] = float(np.nanmean(vals)) if vals.size else float("nan")
            stds[k] = float(np.nanstd(vals)) if vals.size else float("nan")
        mats = [np.asarray(d["rater_prompt_dice_matrix"], dtype=np.float64) for d in per_case
                if d.get("rater_prompt_dice_matrix") is not None]
        matrix = np.nanmean(np.stack(mats), 0).tolist() if mats else None
    for k in SOFT_METRICS:
        if any(d.get(k) == NOT_AVAILABLE for d in per_case):
            means[k] = stds[k] = NOT_AVAILABLE
    return {"mode": mode, "num_cases": len(per_case), "metrics": means, "metrics_std": stds,
            "per_case": per_case, "raters": list(raters), "rater_prompt_dice_matrix": matrix,
            RELIABILITY_KEY: pool_reliability([d.get(RELIABILITY_KEY) for d in per_case])}
