"""Resampling of images, one-hot label stacks and probabilities to a target spacing.

Rules (documentation/planning.md, "Resampling"):
- images: spline order ``order`` (3 by default) on every axis;
- labels: every rater's map is one-hot encoded, each class channel is resampled with linear
  interpolation (order 1) and the argmax is taken: thin structures survive where nearest
  neighbour would drop or break them;
- anisotropic cases (max/min spacing > ANISOTROPY_THRESHOLD in the current or target
  spacing): the in-plane axes are resampled with the orders above, the low-resolution axis
  with nearest neighbour (order 0), as nnU-Net does, because interpolating across thick slices
  invents structure between them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from skimage.transform import resize

from diffoseg_auto.configuration import lowres_axis


def compute_new_shape(old_shape: Sequence[int], old_spacing: Sequence[float], new_spacing: Sequence[float]) -> list[int]:
    """Shape after resampling from ``old_spacing`` to ``new_spacing`` (rounded, at least 1)."""
    old = np.asarray(old_shape, float) * np.asarray(old_spacing, float) / np.asarray(new_spacing, float)
    return [max(1, int(round(s))) for s in old]


def separate_axis_for(current_spacing: Sequence[float], new_spacing: Sequence[float]) -> int | None:
    """nnU-Net's choice: anisotropy of the current spacing first, else of the target spacing."""
    ax = lowres_axis(current_spacing)
    return ax if ax is not None else lowres_axis(new_spacing)


def _nearest_along(arr: np.ndarray, axis: int, new_len: int) -> np.ndarray:
    old_len = arr.shape[axis]
    if old_len == new_len:
        return arr
    idx = np.minimum(((np.arange(new_len) + 0.5) * old_len / new_len).astype(int), old_len - 1)
    return np.take(arr, idx, axis=axis)


def resize_channels(arr: np.ndarray, new_shape: Sequence[int], order: int, separate_axis: int | None = None) -> np.ndarray:
    """Resize every channel of (C,*S) float array to ``new_shape`` (spatial)."""
    new_shape = [int(s) for s in new_shape]
    arr = arr.astype(np.float32, copy=False)
    if list(arr.shape[1:]) == new_shape:
        return arr.copy()
    kw = dict(order=order, mode="edge", anti_aliasing=False, preserve_range=True)
    out = np.empty((arr.shape[0], *new_shape), dtype=np.float32)
    for c in range(arr.shape[0]):
        if separate_axis is None:
            out[c] = resize(arr[c], new_shape, **kw)
            continue
        ax = separate_axis
        inplane = [s for i, s in enumerate(new_shape) if i != ax]
        moved = np.moveaxis(arr[c], ax, 0)
        tmp = np.stack([resize(sl, inplane, **kw) for sl in moved]) if list(moved.shape[1:]) != inplane else moved
        out[c] = np.moveaxis(_nearest_along(tmp, 0, new_shape[ax]), 0, ax)
    return out


def resample_data(data: np.ndarray, new_shape: Sequence[int], current_spacing: Sequence[float],
                  new_spacing: Sequence[float], order: int = 3) -> np.ndarray:
    """Image (C,*S) -> (C,*new_shape) float32."""
    return resize_channels(data, new_shape, order, separate_axis_for(current_spacing, new_spacing))


def resample_probabilities(probs: np.ndarray, new_shape: Sequence[int], current_spacing: Sequence[float],
                           new_spacing: Sequence[float], order: int = 1) -> np.ndarray:
    """Class probabilities (K,*S) -> (K,*new_shape); linear by default so they stay in [0, 1]."""
    return resize_channels(probs, new_shape, order, separate_axis_for(current_spacing, new_spacing))


def resample_labels(labels: np.ndarray, num_classes: int, new_shape: Sequence[int], current_spacing: Sequence[float],
                    new_spacing: Sequence[float], order: int = 1) -> np.ndarray:
    """One label map (*S) int -> (*new_shape) uint8 via one-hot interpolation and argmax."""
    if list(labels.shape) == [int(s) for s in new_shape]:
        return labels.astype(np.uint8, copy=True)
    onehot = np.stack([labels == k for k in range(num_classes)]).astype(np.float32)
    res = resize_channels(onehot, new_shape, order, separate_axis_for(current_spacing, new_spacing))
    return np.argmax(res, axis=0).astype(np.uint8)


def resample_rater_stack(segs: np.ndarray, rater_mask: np.ndarray, num_classes: int, new_shape: Sequence[int],
                         current_spacing: Sequence[float], new_spacing: Sequence[float], order: int = 1) -> np.ndarray:
    """Every annotating rater's map (R,*S) -> (R,*new_shape) uint8; missing raters stay zeros."""
    out = np.zeros((segs.shape[0], *[int(s) for s in new_shape]), dtype=np.uint8)
    for k in range(segs.shape[0]):
        if rater_mask[k]:
            out[k] = resample_labels(segs[k], num_classes, new_shape, current_spacing, new_spacing, order)
    return out
