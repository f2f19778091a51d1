"""The raters' STAPLE consensus (Warfield et al., IEEE TMI 2004), from SimpleITK's filters (no EM written here).

- Two classes: ``sitk.STAPLEImageFilter`` (foreground value 1) estimates each rater's sensitivity and
  specificity and gives the per-voxel probability of the true foreground; the consensus is probability > 0.5
  (0.5 exactly -> background, as the majority vote's ties).
- More classes: ``sitk.MultiLabelSTAPLEImageFilter`` (one confusion matrix per rater); the voxels it leaves
  undecided get the raters' majority vote (ties -> the lower class).

Degenerate inputs, where STAPLE's prior is 0 or 1 and SimpleITK returns NaN, are answered without it: one rater
is its own consensus, and raters who all drew the same mask agree on it.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from diffoseg_auto.evaluation.metrics import majority_vote

_UNDECIDED = 255  # MultiLabelSTAPLE's label for voxels without a decision (no class value reaches it)


def staple_probability(rater_labels: np.ndarray) -> np.ndarray:
    """(R, *S) binary masks -> (*S) float64 STAPLE probability of foreground (SimpleITK's STAPLEImageFilter; kept in
    its precision: a float32 cast rounds probabilities just above 0.5 to 0.5 and moves the consensus)."""
    masks = (np.asarray(rater_labels) > 0).astype(np.uint8)
    if len(masks) == 1 or (masks == masks[0]).all():
        return masks[0].astype(np.float64)
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    out = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in masks]))
    return np.nan_to_num(out, nan=0.0)


def staple_consensus(rater_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(R, *S) label maps of the raters who annotated the case -> (*S) uint8 STAPLE consensus (module docstring)."""
    labels = np.asarray(rater_labels, dtype=np.uint8)
    if len(labels) == 0:
        raise ValueError("staple_consensus: no rater labels given")
    if num_classes <= 2:
        return (staple_probability(labels) > 0.5).astype(np.uint8)
    if len(labels) == 1 or (labels == labels[0]).all():
        return labels[0].copy()
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(_UNDECIDED)
    out = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in labels])).astype(np.uint8)
    undecided = out == _UNDECIDED
    if undecided.any():
        out[undecided] = majority_vote(labels, num_classes)[undecided]
    return out
