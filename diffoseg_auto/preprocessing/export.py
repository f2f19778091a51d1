"""Undo preprocessing for predictions: preprocessed geometry -> original image geometry."""
from __future__ import annotations

import numpy as np

from diffoseg_auto.plans.plans import ConfigurationPlan
from diffoseg_auto.preprocessing.resampling import resample_probabilities


def revert_probabilities(probs: np.ndarray, properties: dict, configuration: ConfigurationPlan) -> np.ndarray:
    """(K,*S_preprocessed) -> (K,*S_original): linear resampling to the cropped shape, then pasted
    into the original extent with background probability 1 outside the crop."""
    probs = np.asarray(probs, dtype=np.float32)
    if list(probs.shape[1:]) != list(properties["shape_after_resample"]):
        raise ValueError(f"probabilities have spatial shape {list(probs.shape[1:])}, the case was preprocessed to "
                         f"{properties['shape_after_resample']}")
    orig_props = properties["original_props"]
    cropped = resample_probabilities(probs, properties["shape_after_crop"], properties["spacing"],
                                     orig_props["spacing"], order=1)
    out = np.zeros((probs.shape[0], *orig_props["shape"]), dtype=np.float32)
    out[0] = 1.0
    sl = (slice(None), *[slice(lo, hi) for lo, hi in properties["bbox"]])
    out[sl] = cropped
    return out


def revert_labels(labels: np.ndarray, properties: dict, configuration: ConfigurationPlan,
                  num_classes: int | None = None) -> np.ndarray:
    """(*S_preprocessed) int label map -> (*S_original) uint8, through one-hot probabilities so
    thin structures are not lost as with nearest-neighbour resampling."""
    labels = np.asarray(labels)
    k = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    k = max(k, 2)
    onehot = np.stack([labels == c for c in range(k)]).astype(np.float32)
    return np.argmax(revert_probabilities(onehot, properties, configuration), axis=0).astype(np.uint8)
