"""Checks of dataset.json's raters and of every label file read, done even without --verify_dataset_integrity.

Without them a 0/255 mask dies later in training with an IndexError, a wrong-size label with a
broadcast error naming no file, and ``"raters": "rater0"`` becomes six raters ``r``, ``a``, ``t``, ...
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from diffoseg_auto.dataset.dataset_errors import DatasetFormatError
from diffoseg_auto.errors import UserError


class LabelFileError(DatasetFormatError, UserError):
    """A label file or the raters field that the pipeline cannot use."""


def check_raters_field(raters: object, dataset_json: str | Path) -> list[str]:
    """dataset.json 'raters' must be a non-empty list of distinct folder names; returns it."""
    if not isinstance(raters, list) or not raters or not all(isinstance(r, str) and r for r in raters):
        raise LabelFileError(f"{dataset_json}: 'raters' must be a non-empty list of rater folder names such as "
                             f"[\"rater0\"], got {raters!r}.")
    if len(set(raters)) != len(raters):
        raise LabelFileError(f"{dataset_json}: 'raters' contains duplicates {raters}. Each rater needs its own folder.")
    return list(raters)


def check_label_array(seg: np.ndarray, path: str | Path, image_shape: Sequence[int], num_classes: int) -> None:
    """The label must have the image's size and values 0..num_classes-1."""
    if list(seg.shape) != list(image_shape):
        raise LabelFileError(f"{path}: label size {list(seg.shape)} differs from its image {list(image_shape)}. "
                             "Save the label in the image's geometry.")
    integral = not np.issubdtype(seg.dtype, np.floating) or bool(np.all(seg == np.round(seg)))
    if seg.size == 0 or (integral and seg.min() >= 0 and seg.max() < num_classes):
        return  # the common case without np.unique, which sorts the whole volume
    bad = [v for v in np.unique(seg).tolist() if not (0 <= v < num_classes) or v != int(v)]
    if bad:
        hint = " Masks saved as 0/255? Divide them by 255." if 255 in bad else ""
        raise LabelFileError(f"{path}: label value(s) {bad[:10]} outside dataset.json labels 0..{num_classes - 1}."
                             f"{hint} Fix the label file or add the labels.")
