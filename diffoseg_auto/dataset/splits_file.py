"""The one reader of ``splits_final.json`` (the cross-validation folds in the preprocessed dataset folder).

Training writes the file (training/splits.py); training, ``diffoseg_evaluate -f``, the method comparison, the
learning curves and the fold-image links read it here, so a broken file gives the same one-line message
everywhere. It lives in the dataset layer, below evaluation and training, because both read it.
"""
from __future__ import annotations

from pathlib import Path

from diffoseg_auto.errors import UserError
from diffoseg_auto.utilities.file_ops import load_json

SPLITS_FILE = "splits_final.json"
_FIX = "Fix or delete the file to regenerate it (the next diffoseg_train of this dataset writes it)."


class SplitsError(UserError, ValueError):
    """A missing or malformed splits_final.json, or a fold it does not have."""


def _is_case_list(x: object) -> bool:
    return isinstance(x, list) and all(isinstance(c, str) for c in x)


def load_splits(preprocessed_dataset_folder: str | Path) -> list[dict]:
    """The existing ``splits_final.json``, checked for shape; a missing file is an error naming the fix."""
    path = Path(preprocessed_dataset_folder) / SPLITS_FILE
    if not path.is_file():
        raise SplitsError(f"{path}: no splits yet. They are created by the first `diffoseg_train` of this dataset.")
    splits = load_json(path, fix=_FIX)
    if not (isinstance(splits, list) and splits and all(
            isinstance(s, dict) and {"train", "val"} <= set(s) and _is_case_list(s["train"]) and _is_case_list(s["val"])
            for s in splits)):
        raise SplitsError(f"{path}: expected a non-empty list of {{'train': [case, ...], 'val': [case, ...]}}. {_FIX}")
    return splits


def select_fold(splits: list[dict], fold: int | str, cases: list[str], where: str = SPLITS_FILE) -> tuple[list[str], list[str]]:
    """(train, val) case lists for ``fold``; fold 'all' -> every case in both."""
    if str(fold) == "all":
        return sorted(cases), sorted(cases)
    try:
        f = int(fold)
    except (TypeError, ValueError):
        raise SplitsError(f"Fold must be an integer or 'all', got '{fold}'.") from None
    if not 0 <= f < len(splits):
        raise SplitsError(f"Fold {f} is outside the splits in {where} (folds 0..{len(splits) - 1} and 'all').")
    return list(splits[f]["train"]), list(splits[f]["val"])


def fold_validation_cases(preprocessed_dataset_folder: str | Path, fold: int) -> list[str]:
    """The held-out (``val``) cases of ``fold``, sorted."""
    folder = Path(preprocessed_dataset_folder)
    return sorted(select_fold(load_splits(folder), fold, [], str(folder / SPLITS_FILE))[1])
