"""Soft-prediction calibration and uncertainty-disagreement correlation (pure numpy + scipy.ndimage).

Per case, from N label maps (the samples) and the available raters' label maps:

- ``p`` = the samples' foreground probability: the fraction of samples with a non-background label
  at the pixel (the mean of their one-hot foreground; for the multi-head U-Net, whose samples cycle
  through its heads, the mean over heads when N is a multiple of the head count);
- ``q`` = the raters' foreground fraction: the fraction of available raters who marked the pixel
  with any non-background label.

Several foreground classes are merged into one foreground (any class > 0), so the three numbers
below exist once per case, not per class.

Counted pixels (``counted_region``): every pixel within ``BAND`` = 2 voxels (chessboard distance,
per array axis whatever the spacing) of a pixel where p > 0 or q > 0. Pixels far from any
foreground have p = q = 0 and would only dilute the averages (an image of background makes every
method look calibrated); the band keeps the pixels just outside the objects, where a sharp correct
prediction earns its zeros. A case where the counted region is empty (no sample and no rater marks
anything) has NaN calibration and is left out of the means.

- ``ECE``: 10 equal-width bins of p over [0, 1] ([0, .1), ..., [.9, 1.0]; p = 1 in the last bin);
  ``sum_b n_b / n * |mean p_b - mean q_b|`` over the counted pixels (= ``sum_b |sum p_b - sum q_b| / n``).
- ``Brier``: mean of (p - q)^2 over the counted pixels.
- ``Uncertainty_NCC``: normalised cross-correlation of u = p(1-p) and v = q(1-q) over the counted
  pixels, ``sum((u - mean u)(v - mean v)) / sqrt(sum (u - mean u)^2 * sum (v - mean v)^2)``. NaN when
  v does not vary (the raters agree on every pixel): such a case is not averaged. 0 when u does not
  vary but v does: the uncertainty map marks nothing, so it finds none of the disagreement.

Every prediction is scored, deterministic ones included: its p is its samples' foreground fraction, so a
method that repeats one label map N times (a deterministic U-Net, a Probabilistic U-Net that collapsed,
one rater's mask repeated) has p = 0 or 1 on every pixel, confidence 1 everywhere, and where the raters
disagree that is the worst calibration there is: ECE and Brier show it. Where such a method saved its
softmax as the consensus probabilities (``foreground_probability`` of ``calibration_metrics``), that is its
p; a prediction without samples is scored on that file, else on its consensus label map (0/1).

``Uncertainty_NCC`` is ``NOT_AVAILABLE`` ("n/a") only where the predicted uncertainty is constant: a
prediction whose p is 0 or 1 on every pixel of every case (no *soft output*) has u = 0 everywhere, and the
correlation of a constant is undefined (``mark_constant_uncertainty``, decided over all cases of a
prediction, so that a stochastic method whose samples collapse on one case scores 0 there instead of having
that case dropped). Up to commit 7432851 ECE and Brier were "n/a" for such predictions too (the old rule).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.ndimage import binary_dilation, generate_binary_structure

NUM_BINS = 10
BAND = 2
NCC = "Uncertainty_NCC"
SOFT_METRICS = ("ECE", "Brier", NCC)
NOT_AVAILABLE = "n/a"
SOFT_OUTPUT_KEY = "soft_output"     # per case: bool, 0 < p < 1 somewhere
RELIABILITY_KEY = "reliability"     # per case and pooled: {"count", "sum_p", "sum_q"} per bin
# the tables' legend of the n/a rule (benchmark.md, method_comparison.md)
NCC_LEGEND = ("Uncertainty_NCC is n/a where the predicted uncertainty is constant (p is 0 or 1 on every pixel: a "
              "deterministic or collapsed prediction, whose ECE and Brier are still scored) or no case had "
              "disagreeing raters; the correlation is undefined there.")
# bin b holds EDGES[b-1] <= p < EDGES[b]; m / 10 and a fraction k / N that equals it round to the same double
_INNER_EDGES = np.arange(1, NUM_BINS) / NUM_BINS


def foreground_fraction(label_maps: np.ndarray) -> np.ndarray:
    """(N, *S) label maps -> (*S) float64 fraction of maps with a non-background label (count / N, correctly rounded)."""
    maps = np.asarray(label_maps)
    if maps.ndim < 2 or maps.shape[0] == 0:
        raise ValueError(f"expected a non-empty stack (N, *S) of label maps, got shape {maps.shape}")
    return (maps > 0).sum(0) / maps.shape[0]


def samples_disagree(samples: np.ndarray) -> bool:
    """Whether the samples' foreground fraction is strictly between 0 and 1 somewhere (soft output of their own);
    where it is not, a saved softmax is the prediction's p (``calibration_metrics``)."""
    p = foreground_fraction(samples)
    return bool(np.any((p > 0) & (p < 1)))


def counted_region(p: np.ndarray, q: np.ndarray, band: int = BAND) -> np.ndarray:
    """Pixels within ``band`` voxels (chessboard distance) of a pixel where p > 0 or q > 0."""
    support = (np.asarray(p) > 0) | (np.asarray(q) > 0)
    if band <= 0 or not support.any():
        return support
    return binary_dilation(support, generate_binary_structure(support.ndim, support.ndim), iterations=band)


def reliability_bins(p: np.ndarray, q: np.ndarray, region: np.ndarray) -> dict[str, list[float]]:
    """Per bin of p: pixel count and the sums of p and q over the counted pixels (sums pool over cases)."""
    pv, qv = np.asarray(p, np.float64)[region], np.asarray(q, np.float64)[region]
    b = np.digitize(pv, _INNER_EDGES)
    return {"count": np.bincount(b, minlength=NUM_BINS).astype(float).tolist(),
            "sum_p": np.bincount(b, pv, minlength=NUM_BINS).tolist(),
            "sum_q": np.bincount(b, qv, minlength=NUM_BINS).tolist()}


def expected_calibration_error(bins: dict[str, Sequence[float]]) -> float:
    """ECE of ``reliability_bins``: sum over bins of |sum p_b - sum q_b| / n; NaN without counted pixels."""
    n = float(np.sum(bins["count"]))
    if n == 0:
        return float("nan")
    return float(np.abs(np.asarray(bins["sum_p"]) - np.asarray(bins["sum_q"])).sum() / n)


def brier_score(p: np.ndarray, q: np.ndarray, region: np.ndarray) -> float:
    """Mean (p - q)^2 over the counted pixels; NaN without counted pixels."""
    if not region.any():
        return float("nan")
    return float(np.mean((np.asarray(p, np.float64)[region] - np.asarray(q, np.float64)[region]) ** 2))


def uncertainty_ncc(p: np.ndarray, q: np.ndarray, region: np.ndarray) -> float:
    """NCC of p(1-p) and q(1-q) over the counted pixels: NaN when q(1-q) is constant, 0 when p(1-p) is."""
    pv, qv = np.asarray(p, np.float64)[region], np.asarray(q, np.float64)[region]
    u, v = pv * (1 - pv), qv * (1 - qv)
    if v.size == 0 or np.ptp(v) == 0:
        return float("nan")
    if np.ptp(u) == 0:  # ptp, not the centred sum: a mean of equal values may round off them
        return 0.0
    du, dv = u - u.mean(), v - v.mean()
    return float((du * dv).sum() / np.sqrt((du ** 2).sum() * (dv ** 2).sum()))


def calibration_metrics(samples: np.ndarray, available_raters: np.ndarray, band: int = BAND,
                        foreground_probability: np.ndarray | None = None) -> dict[str, Any]:
    """ECE, Brier, Uncertainty_NCC, the soft-output flag and the reliability bins of one case.

    samples (N, *S) and available_raters (R, *S) are label maps (only the raters who annotated the case); a
    prediction without samples passes its consensus as one map (1, *S). p is the samples' foreground fraction;
    where the samples do not disagree anywhere in the case (a deterministic baseline repeats one label map) and
    ``foreground_probability`` (*S) is given (the saved consensus probabilities: that baseline's softmax, written
    with --save_probabilities), p is that instead. Without raters every metric is NaN and the bins are None.
    """
    p = foreground_fraction(samples)
    if foreground_probability is not None and not samples_disagree(samples):
        p = np.asarray(foreground_probability, np.float64)
    out: dict[str, Any] = {SOFT_OUTPUT_KEY: bool(np.any((p > 0) & (p < 1)))}
    if np.asarray(available_raters).shape[0] == 0:
        return {**{k: float("nan") for k in SOFT_METRICS}, **out, RELIABILITY_KEY: None}
    q = foreground_fraction(available_raters)
    if q.shape != p.shape:
        raise ValueError(f"samples have spatial shape {p.shape} but the raters have {q.shape}")
    region = counted_region(p, q, band)
    bins = reliability_bins(p, q, region)
    return {"ECE": expected_calibration_error(bins), "Brier": brier_score(p, q, region),
            "Uncertainty_NCC": uncertainty_ncc(p, q, region), **out, RELIABILITY_KEY: bins}


def has_soft_output(per_case: Sequence[dict]) -> bool:
    """Whether a prediction has soft output: 0 < p < 1 somewhere in some case (see the module docstring)."""
    return any(d.get(SOFT_OUTPUT_KEY, False) for d in per_case)


def mark_constant_uncertainty(per_case: list[dict], fill: Any = NOT_AVAILABLE) -> list[dict]:
    """``per_case`` unchanged when the prediction has soft output; else copies whose Uncertainty_NCC is ``fill``
    (NOT_AVAILABLE in summaries, NaN in numeric tables): its uncertainty p(1-p) is 0 everywhere, and the
    correlation of a constant is undefined. ECE, Brier and the reliability bins stay: they score its overconfidence."""
    if has_soft_output(per_case) or not any(NCC in d for d in per_case):
        return per_case
    return [{k: (fill if k == NCC else v) for k, v in d.items()} for d in per_case]


def pool_reliability(bins: Sequence[dict | None]) -> dict[str, list[float]] | None:
    """Sum of reliability bins over cases (or folds); None when none is given."""
    given = [b for b in bins if b is not None]
    if not given:
        return None
    return {k: np.sum([b[k] for b in given], axis=0).astype(float).tolist() for k in ("count", "sum_p", "sum_q")}


def bin_means(bins: dict[str, Sequence[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean p, mean q (NaN for empty bins) and the fraction of counted pixels per bin, for the reliability diagram."""
    count = np.asarray(bins["count"], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.asarray(bins["sum_p"]) / count, np.asarray(bins["sum_q"]) / count,
                count / count.sum() if count.sum() else count)
