"""Sliding-window geometry and Gaussian importance weights (as in nnU-Net).

Windows tile the (padded) preprocessed image with the plans' patch size and a step of
``step_size * patch`` voxels; the first and last windows touch the image borders and the
others are spread evenly in between. Window predictions are blended with a Gaussian
importance map (sigma = patch / 8) so that window centres, where the network sees the most
context, dominate.
"""
from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch


def compute_steps_for_sliding_window(image_size: Sequence[int], tile_size: Sequence[int], tile_step_size: float) -> list[list[int]]:
    """Window start coordinates per axis.

    Per axis: ``ceil((image - tile) / (tile * step_size)) + 1`` windows, evenly spread between
    0 and ``image - tile``. A tile of 1 voxel (the slice axis of a 2d configuration) gives one
    window per slice.
    """
    if not 0 < tile_step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {tile_step_size}")
    if len(image_size) != len(tile_size):
        raise ValueError(f"image size {list(image_size)} and patch size {list(tile_size)} differ in dimensionality")
    if any(int(i) < int(t) for i, t in zip(image_size, tile_size)):
        raise ValueError(f"image size {list(image_size)} is smaller than the patch {list(tile_size)}; pad the image first")
    steps = []
    for size, tile in zip(image_size, tile_size):
        target_step = max(1.0, tile * tile_step_size)  # never less than one voxel (1-voxel slice tiles)
        num = int(np.ceil((size - tile) / target_step)) + 1
        max_start = size - tile
        actual = max_start / (num - 1) if num > 1 else 0.0
        steps.append(sorted({int(np.round(actual * i)) for i in range(num)}))
    return steps


def sliding_window_slicers(image_size: Sequence[int], tile_size: Sequence[int], tile_step_size: float) -> list[tuple[slice, ...]]:
    """Spatial slice tuples of all windows, in C order over the per-axis starts."""
    steps = compute_steps_for_sliding_window(image_size, tile_size, tile_step_size)
    return [tuple(slice(s, s + t) for s, t in zip(starts, tile_size)) for starts in itertools.product(*steps)]


def compute_gaussian(tile_size: Sequence[int], sigma_scale: float = 1.0 / 8, value_scaling_factor: float = 1.0,
                     dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """Separable Gaussian over the patch, maximum = value_scaling_factor, no zeros.

    Zeros would make voxels covered only by window borders undefined after normalisation, so
    the smallest positive value replaces any underflow.
    """
    return _gaussian_cached(tuple(int(t) for t in tile_size), float(sigma_scale), float(value_scaling_factor)).to(device, dtype)


@lru_cache(maxsize=8)
def _gaussian_cached(tile_size: tuple[int, ...], sigma_scale: float, value_scaling_factor: float) -> torch.Tensor:
    g = np.ones(tile_size, dtype=np.float64)
    for axis, t in enumerate(tile_size):
        centre = (t - 1) / 2.0
        sigma = max(t * sigma_scale, 1e-6)
        x = np.arange(t, dtype=np.float64)
        profile = np.exp(-0.5 * ((x - centre) / sigma) ** 2)
        shape = [1] * len(tile_size)
        shape[axis] = t
        g = g * profile.reshape(shape)
    g = g / g.max() * value_scaling_factor
    positive = g[g > 0]
    g[g <= 0] = positive.min() if positive.size else value_scaling_factor
    return torch.from_numpy(g.astype(np.float32))
