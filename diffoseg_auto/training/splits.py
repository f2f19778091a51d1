"""Cross-validation splits (splits_final.json), grouped so one patient never spans two folds.

The file is written once, atomically, in the preprocessed dataset folder and reused by every
later run, so all trainers of a dataset see the same folds (edit it by hand to customise).
Fold ``"all"`` trains on every case; its "validation" set is then also every case (the
validation numbers are training-set numbers, reported only as a sanity check).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# the file's one reader (shape checks, fold selection) is in the dataset layer, which evaluation reads it through too
from diffoseg_auto.dataset.splits_file import SPLITS_FILE, SplitsError, load_splits, select_fold
from diffoseg_auto.utilities.file_ops import save_json

__all__ = ["SPLITS_FILE", "SplitsError", "create_splits", "get_or_create_splits", "load_splits", "sample_cases",
           "select_fold"]


def sample_cases(cases: list[str], max_cases: int | None, seed: int = 0) -> list[str]:
    """A fixed, seeded sample of ``max_cases`` of ``cases`` (sorted; all of them when None or fewer exist)."""
    cases = sorted(cases)
    if max_cases is None or len(cases) <= max_cases:
        return cases
    pick = np.random.default_rng(seed).choice(len(cases), size=max_cases, replace=False)
    return [cases[i] for i in sorted(pick)]


def _grouped_kfold(cases: list[str], groups: list[str], num_folds: int, seed: int) -> list[dict]:
    """Deterministic grouped k-fold: shuffle groups with ``seed``, then assign each group (largest
    first) to the currently smallest fold, which balances case counts like sklearn's GroupKFold."""
    unique = sorted(set(groups))
    rng = np.random.RandomState(seed)
    order = [unique[i] for i in rng.permutation(len(unique))]
    sizes = {g: sum(1 for x in groups if x == g) for g in unique}
    order.sort(key=lambda g: -sizes[g])  # stable: ties keep the shuffled order
    fold_of: dict[str, int] = {}
    counts = [0] * num_folds
    for g in order:
        f = int(np.argmin(counts))
        fold_of[g] = f
        counts[f] += sizes[g]
    splits = []
    for f in range(num_folds):
        val = sorted(c for c, g in zip(cases, groups) if fold_of[g] == f)
        train = sorted(c for c, g in zip(cases, groups) if fold_of[g] != f)
        splits.append({"train": train, "val": val})
    return splits


def create_splits(cases: list[str], case_groups: dict | None, num_folds: int = 5, seed: int = 12345) -> list[dict]:
    """Splits for ``cases``; ``case_groups`` maps case -> patient/group id (missing: own group)."""
    cases = sorted(cases)
    groups = [str((case_groups or {}).get(c, f"__case__{c}")) for c in cases]
    n_groups = len(set(groups))
    if n_groups < 2:
        raise SplitsError(f"Cannot build cross-validation folds from {n_groups} group(s) ({len(cases)} cases). "
                          f"Train with fold 'all' or add cases.")
    k = min(num_folds, n_groups)
    return _grouped_kfold(cases, groups, k, seed)


def get_or_create_splits(preprocessed_dataset_folder: str | Path, cases: list[str], case_groups: dict | None,
                         num_folds: int = 5, seed: int = 12345) -> list[dict]:
    """Load ``splits_final.json`` or create and save it (atomic). Returns [{'train': [...], 'val': [...]}, ...]."""
    path = Path(preprocessed_dataset_folder) / SPLITS_FILE
    if path.is_file():
        splits = load_splits(preprocessed_dataset_folder)
        unknown = sorted({c for s in splits for c in s["train"] + s["val"]} - set(cases))
        if unknown:
            raise SplitsError(f"{path}: cases {unknown[:5]} are not in the preprocessed data. "
                              f"Delete the file to regenerate the splits, or preprocess these cases.")
        return splits
    splits = create_splits(cases, case_groups, num_folds, seed)
    save_json(splits, path)
    return splits
