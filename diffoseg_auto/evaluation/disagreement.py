"""Predicted and true disagreement per case: which case should a second reader see?

A model that has learnt the raters' variability should predict, without labels, where they would disagree.
Per case, from what ``diffoseg_predict`` writes:

- ``sample_disagreement``: the mean pairwise distance (1 - Dice) between the N Stage I samples;
- ``rater_spread``: the mean pairwise distance (1 - Dice) between the per-rater predictions (raters/);

and from the labels, the true inter-rater disagreement: 1 - the mean pairwise Dice of the raters who annotated the
case. All three use one distance: strict Dice (two empty masks agree, distance 0), averaged over the foreground
classes (class c vs rest) and over the unordered pairs; NaN with fewer than two maps.

``diffoseg_predict`` writes each case's values to ``OUT/disagreement/<case>.json`` (in the prediction's
preprocessed geometry: a ratio of overlaps, which resampling hardly moves); ``folder_disagreement`` reads them, and
computes them from samples/ and raters/ (in the output geometry) for a folder written without them.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from diffoseg_auto.evaluation.metrics import dice_matrix, majority_vote
from diffoseg_auto.evaluation.prediction_folder import EvaluationInputError, load_samples_npz
from diffoseg_auto.io.image_io import file_ending_of, read_seg
from diffoseg_auto.utilities.file_ops import load_json, save_json

DISAGREEMENT_FOLDER = "disagreement"  # OUT/disagreement/<case>.json
SAMPLE_DISAGREEMENT, RATER_SPREAD = "sample_disagreement", "rater_spread"
MEASURES = (SAMPLE_DISAGREEMENT, RATER_SPREAD)


def mean_pairwise_distance(label_maps: np.ndarray | None, num_classes: int) -> float:
    """Mean over foreground classes of the mean (1 - Dice) over the unordered pairs of (M, *S) label maps; NaN if M < 2."""
    if label_maps is None or len(label_maps) < 2:
        return float("nan")
    maps = np.asarray(label_maps)
    upper = np.triu_indices(len(maps), k=1)
    per_class = [float(np.mean(1.0 - dice_matrix(maps == c, maps == c)[upper])) for c in range(1, max(num_classes, 2))]
    return float(np.mean(per_class))


def rater_label_maps(rater_samples: dict[str, np.ndarray] | None, num_classes: int) -> np.ndarray | None:
    """{rater: (n, *S)} -> (R, *S): each rater's map as diffoseg_predict exports it (the vote of its n samples)."""
    if not rater_samples:
        return None
    return np.stack([np.asarray(s)[0] if len(s) == 1 else majority_vote(np.asarray(s), num_classes)
                     for s in rater_samples.values()])


def case_disagreement(samples: np.ndarray | None, rater_predictions: np.ndarray | None, num_classes: int) -> dict:
    """The predicted disagreement of one case (module docstring); a measure without its maps is NaN."""
    return {SAMPLE_DISAGREEMENT: mean_pairwise_distance(samples, num_classes),
            RATER_SPREAD: mean_pairwise_distance(rater_predictions, num_classes),
            "num_samples": 0 if samples is None else len(samples),
            "num_rater_predictions": 0 if rater_predictions is None else len(rater_predictions)}


def true_disagreement(rater_labels: np.ndarray, rater_mask: np.ndarray, num_classes: int) -> float:
    """1 - mean pairwise Dice of the raters who annotated the case; NaN with fewer than two."""
    return mean_pairwise_distance(np.asarray(rater_labels)[np.asarray(rater_mask, bool)], num_classes)


def disagreement_file(pred_folder: str | Path, case: str) -> Path:
    return Path(pred_folder) / DISAGREEMENT_FOLDER / f"{case}.json"


def save_case_disagreement(pred_folder: str | Path, case: str, values: dict) -> None:
    """Write one case's values (NaN as null: strict JSON)."""
    save_json({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()},
              disagreement_file(pred_folder, case))


def _load_case_file(path: Path) -> dict:
    try:
        values = load_json(path)
        return {**values, **{m: float("nan") if values[m] is None else float(values[m]) for m in MEASURES}}
    except (ValueError, KeyError, TypeError) as e:
        raise EvaluationInputError(f"{path}: not a disagreement file written by diffoseg_predict ({type(e).__name__}: "
                                   f"{e}). Delete it; diffoseg_rank_cases then computes it from samples/ and raters/.")


def _prediction_label_files(pred_folder: Path) -> dict[str, dict[str, Path]]:
    """case -> {rater: file} of raters/<rater>/<case><ending>."""
    found: dict[str, dict[str, Path]] = {}
    raters_dir = pred_folder / "raters"
    for rater in sorted(p.name for p in raters_dir.iterdir() if p.is_dir()) if raters_dir.is_dir() else []:
        for f in sorted((raters_dir / rater).iterdir()):
            if f.is_file() and not f.name.startswith("."):
                case = f.name[: -len(file_ending_of(f))]
                found.setdefault(case, {})[rater] = f
    return found


def folder_disagreement(pred_folder: str | Path, num_classes: int | None = None) -> dict[str, dict]:
    """case -> predicted disagreement of a prediction folder: disagreement/<case>.json where written, else computed
    from samples/<case>.npz and raters/ (``num_classes`` None: the largest label found + 1, at least 2)."""
    pred_folder = Path(pred_folder)
    written = {f.stem: f for f in (pred_folder / DISAGREEMENT_FOLDER).glob("*.json")}
    samples = {f.name[: -len(".npz")]: f for f in (pred_folder / "samples").glob("*.npz")}
    rater_files = _prediction_label_files(pred_folder)
    out = {case: _load_case_file(f) for case, f in written.items()}
    for case in sorted((set(samples) | set(rater_files)) - set(out)):
        s = load_samples_npz(samples[case]) if case in samples else None
        r = np.stack([read_seg(f)[0] for f in rater_files[case].values()]) if case in rater_files else None
        k = num_classes or max(2, 1 + max(int(a.max()) for a in (s, r) if a is not None))
        out[case] = case_disagreement(s, r, k)
    return dict(sorted(out.items()))


def rank_by_disagreement(per_case: dict[str, dict], measure: str = SAMPLE_DISAGREEMENT) -> list[tuple[str, dict]]:
    """Cases most ambiguous first (``measure`` descending, then the other measure); NaN last, ties by name."""
    other = RATER_SPREAD if measure == SAMPLE_DISAGREEMENT else SAMPLE_DISAGREEMENT

    def key(item: tuple[str, dict]) -> tuple:
        v, w = item[1][measure], item[1][other]
        return (math.isnan(v), -v if not math.isnan(v) else 0.0, math.isnan(w), -w if not math.isnan(w) else 0.0,
                item[0])

    return sorted(per_case.items(), key=key)
