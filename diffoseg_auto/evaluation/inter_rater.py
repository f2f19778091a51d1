"""Inter-rater reference: how well the raters agree with each other, scored like a model.

Leave-one-rater-out: for each case and each available rater k (with at least one other
available rater), rater k's mask is the single "sample" and the other available raters are the
references; GED, Dice_soft, Dice_max, Dice_max_reverse and Dice_match are computed exactly as for
a model's samples. The case value is the mean over k, the dataset value the mean over cases.
With one sample, Dice_max is rater k's best agreement with another rater, Dice_max_reverse the
mean pairwise Dice of k with the others. Cases with fewer than two raters are skipped.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from diffoseg_auto.dataset.raw_dataset import RawDataset
from diffoseg_auto.evaluation.metrics import SAMPLE_METRICS, CaseScoring, evaluate_case
from diffoseg_auto.io.image_io import read_seg


def _mean_dicts(dicts: list[dict]) -> dict:
    keys = [k for k in dicts[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {k: float(np.nanmean([d[k] for d in dicts])) for k in keys}


def labelled_cases(ds: RawDataset, split: str = "Tr") -> list[str]:
    """Cases with at least one rater file in labels<split> (images are not needed here)."""
    ending = ds.file_ending
    cases = set()
    for r in ds.raters:
        folder = ds.labels_folder(split) / r
        if folder.is_dir():
            cases |= {f.name[: -len(ending)] for f in folder.iterdir() if f.name.endswith(ending) and not f.name.startswith(".")}
    return sorted(cases)


def case_leave_one_out(labels: np.ndarray, mask: np.ndarray, num_classes: int, mode: str) -> dict[int, dict]:
    """Rater index k -> metrics of rater k against the other available raters."""
    avail = np.flatnonzero(mask)
    out = {}
    if len(avail) < 2:
        return out
    for k in avail:
        others = mask.copy()
        others[k] = False
        out[int(k)] = evaluate_case(labels[k][None], labels, others, num_classes, scoring=CaseScoring(mode))
    return out


def inter_rater_reference(raw_dataset_folder: str | Path, cases: list[str] | None = None, mode: str = "strict",
                          split: str = "Tr") -> dict:
    """Leave-one-rater-out agreement of a raw dataset's raters (see module docstring), on the labels of ``split``
    ("Tr": labelsTr, "Ts": the test labels labelsTs).

    Returns {"mode", "num_cases", "metrics", "metrics_std" (over cases), "per_rater": {rater: metrics},
    "per_case": [{"case", ...metrics}], "raters"}.
    """
    ds = RawDataset(Path(raw_dataset_folder))
    cases = labelled_cases(ds, split) if cases is None else list(cases)
    per_case, per_rater = [], {r: [] for r in ds.raters}
    for case in cases:
        mask = ds.rater_mask(case, split)
        if not mask.any():
            continue
        labels = None
        for k, r in enumerate(ds.raters):
            if mask[k]:
                arr, _ = read_seg(ds.label_file(r, case, split))
                if labels is None:
                    labels = np.zeros((ds.num_raters, *arr.shape), np.uint8)
                labels[k] = arr
        loo = case_leave_one_out(labels, mask, ds.num_classes, mode)
        if not loo:
            continue
        for k, res in loo.items():
            per_rater[ds.raters[k]].append(res)
        per_case.append({"case": case, **_mean_dicts(list(loo.values()))})
    if not per_case:
        raise RuntimeError(f"{ds.folder}: no case has two or more raters; an inter-rater reference needs at least two annotations per case.")
    names = [k for k in per_case[0] if k != "case"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        metrics = {k: float(np.nanmean([d[k] for d in per_case])) for k in names}
        stds = {k: float(np.nanstd([d[k] for d in per_case])) for k in names}
    return {"mode": mode, "num_cases": len(per_case), "metrics": metrics, "metrics_std": stds,
            "per_rater": {r: _mean_dicts(v) for r, v in per_rater.items() if v},
            "per_case": per_case, "raters": ds.raters, "metric_names": list(SAMPLE_METRICS)}
