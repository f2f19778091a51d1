"""Window geometry of whole-image prediction, the one owner for every predictor (DiffOSeg's and the baselines'):

- the window in the sampled array's coordinates (one voxel along the slice axis of a 2d configuration of 3D data);
- the padded image, its sliding windows (sliding_window.py) and the Gaussian blending map (``window_grid``);
- the conversion of window batches to and from the network's dimensionality;
- the mirroring TTA combinations (nnU-Net's: all subsets of the mirror axes) and the flips.

``num_windows`` counts the windows the same way, for the prediction cost (prediction_cost.py).
"""
from __future__ import annotations

import itertools
from typing import NamedTuple, Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from torch import Tensor

from diffoseg_auto.inference.sliding_window import compute_gaussian, sliding_window_slicers
from diffoseg_auto.plans.plans import ConfigurationPlan


def volume_patch(configuration: ConfigurationPlan, ndim: int) -> list[int]:
    """The window for data with ``ndim`` spatial dims (1 along the slice axis of 2d-on-3D)."""
    patch = [int(p) for p in configuration.patch_size]
    ax = configuration.slice_axis
    if ax is None:
        if ndim != configuration.spatial_dims:
            raise ValueError(f"data has {ndim} spatial dims but the configuration is {configuration.spatial_dims}d "
                             "(and has no slice_axis). Preprocess the case with the same configuration.")
        return patch
    if ndim != configuration.spatial_dims + 1:
        raise ValueError(f"a 2d configuration with slice_axis={ax} expects 3D data (C, Z, Y, X), got {ndim} spatial dims")
    return patch[:ax] + [1] + patch[ax:]


def num_windows(configuration: ConfigurationPlan, spatial_shape: Sequence[int], step_size: float) -> int:
    """Sliding windows of a preprocessed image of ``spatial_shape`` (padded to at least one window, as predicted)."""
    patch = volume_patch(configuration, len(spatial_shape))
    padded = [max(int(s), p) for s, p in zip(spatial_shape, patch)]
    return len(sliding_window_slicers(padded, patch, step_size))


class WindowGrid(NamedTuple):
    """A case laid out for sliding-window prediction."""
    image: Tensor                      # (C, *S) float32, zero-padded to at least one window
    windows: list[tuple[slice, ...]]   # spatial slicers of the windows in ``image``
    gaussian: Tensor                   # (*vol_patch) blending weights of one window
    weight_sum: Tensor                 # (*S) the windows' blending weights summed: the blend's normaliser
    unpad: tuple[slice, ...]           # spatial slicer from ``image`` back to the case's own shape


def window_grid(configuration: ConfigurationPlan, data: np.ndarray, step_size: float,
                device: torch.device) -> WindowGrid:
    """``data`` (C, *S) preprocessed image -> its padded image, windows, Gaussian map and normaliser on ``device``."""
    patch = volume_patch(configuration, data.ndim - 1)
    image = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(device)
    image, unpad = pad_nd_image(image, patch, "constant", {"value": 0}, True)
    windows = sliding_window_slicers(tuple(image.shape[1:]), patch, step_size)
    gaussian = from_net(compute_gaussian(configuration.patch_size, device=device)[None, None],
                        configuration.slice_axis)[0, 0]
    weight_sum = torch.zeros(tuple(image.shape[1:]), device=device)
    for sl in windows:
        weight_sum[sl] += gaussian
    return WindowGrid(image, windows, gaussian, weight_sum, tuple(unpad[1:]))


def to_net(windows: Tensor, slice_axis: int | None) -> Tensor:
    """(B, C, *vol_patch) -> (B, C, *net_patch): drop the slice axis of 2d-on-3D."""
    return windows if slice_axis is None else windows.squeeze(slice_axis + 2)


def from_net(windows: Tensor, slice_axis: int | None) -> Tensor:
    """(B, C, *net_patch) -> (B, C, *vol_patch): the inverse of ``to_net``."""
    return windows if slice_axis is None else windows.unsqueeze(slice_axis + 2)


def mirror_combinations(configuration: ConfigurationPlan, use_mirroring: bool) -> list[tuple[int, ...]]:
    """All subsets of the plans' mirror axes, identity first ([()] without mirroring)."""
    axes = sorted(configuration.augmentation.mirror_axes) if use_mirroring else []
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def flip(x: Tensor, axes: tuple[int, ...]) -> Tensor:
    """Mirror the spatial ``axes`` of a (B, C, *S) batch."""
    return x.flip([a + 2 for a in axes]) if axes else x
