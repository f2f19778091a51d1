"""Per-channel intensity normalisation schemes (chosen by the planner, see planning.md).

- ``ct``: clip to the dataset's foreground percentiles 0.5 / 99.5, then subtract the
  foreground mean and divide by the foreground std (dataset-wide, from the fingerprint);
- ``zscore``: per image mean / std (inside the non-zero mask when use_mask_for_norm);
- ``rescale_0_1``: natural 8-bit images (PNG etc.): divide by 255;
- ``none``: unchanged.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

SCHEMES = ("ct", "zscore", "rescale_0_1", "none")


def normalize_channel(x: np.ndarray, scheme: str, use_mask: bool = False, intensity_properties: dict | None = None,
                      nonzero_mask: np.ndarray | None = None) -> np.ndarray:
    x = x.astype(np.float32, copy=True)
    if scheme == "none":
        return x
    if scheme == "rescale_0_1":
        return x / 255.0
    if scheme == "ct":
        if intensity_properties is None:
            raise ValueError("ct normalisation needs the fingerprint's foreground intensity properties (re-run planning)")
        p = intensity_properties
        np.clip(x, p["percentile_00_5"], p["percentile_99_5"], out=x)
        return (x - p["mean"]) / max(float(p["std"]), 1e-8)
    if scheme == "zscore":
        if use_mask and nonzero_mask is not None and nonzero_mask.any():
            vals = x[nonzero_mask]
            out = (x - vals.mean()) / max(float(vals.std()), 1e-8)
            out[~nonzero_mask] = 0  # outside the body: a fixed value, not noise-scaled background
            return out
        return (x - x.mean()) / max(float(x.std()), 1e-8)
    raise ValueError(f"unknown normalisation scheme '{scheme}' (one of {SCHEMES}); fix normalization_schemes in the plans")


def normalize(data: np.ndarray, schemes: Sequence[str], use_mask_for_norm: Sequence[bool],
              intensity_properties_per_channel: dict, nonzero_mask: np.ndarray | None = None) -> np.ndarray:
    """(C,*S) -> float32 normalised copy; ``intensity_properties_per_channel`` keyed by str(channel)."""
    if len(schemes) != data.shape[0]:
        raise ValueError(f"plans have {len(schemes)} normalisation schemes but the image has {data.shape[0]} channels")
    return np.stack([
        normalize_channel(data[c], schemes[c], bool(use_mask_for_norm[c]),
                          intensity_properties_per_channel.get(str(c)), nonzero_mask)
        for c in range(data.shape[0])
    ])
