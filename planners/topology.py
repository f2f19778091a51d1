"""U-Net topology from a patch size and spacing (nnU-Net's get_pool_and_conv_props rules).

Halve an axis only while its feature map stays >= 2 * min_feature_map_size (so the
bottleneck edge is >= min_feature_map_size, 4 by default) and while its spacing is within a
factor 2 of the finest current spacing (a low-resolution axis waits until the others have
been pooled to a comparable spacing). Kernels are 3 on an axis once its spacing is within a
factor 2 of the finest, else 1 (no convolution across thick slices). The bottleneck always
uses 3x3(x3).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def get_pool_and_conv_props(spacing: Sequence[float], patch_size: Sequence[int], min_feature_map_size: int = 4,
                            max_numpool: int = 999) -> tuple[list[int], list[list[int]], list[list[int]], list[int], list[int]]:
    """-> (num_pool_per_axis, strides per stage, kernel sizes per stage, padded patch size, must_be_divisible_by)."""
    dim = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [int(s) for s in patch_size]
    strides = [[1] * dim]
    kernels: list[list[int]] = []
    num_pool = [0] * dim
    kernel = [1] * dim
    while True:
        valid = [i for i in range(dim) if current_size[i] >= 2 * min_feature_map_size]
        if not valid:
            break
        finest = min(current_spacing[i] for i in valid)
        valid = [i for i in valid if current_spacing[i] / finest < 2 and num_pool[i] < max_numpool]
        if len(valid) == 1 and current_size[valid[0]] < 3 * min_feature_map_size:
            break  # pooling a single axis barely helps: stop as nnU-Net does
        if not valid:
            break
        for d in range(dim):
            if kernel[d] != 3 and current_spacing[d] / min(current_spacing) < 2:
                kernel[d] = 3
        stride = [1] * dim
        for v in valid:
            stride[v] = 2
            num_pool[v] += 1
            current_spacing[v] *= 2
            current_size[v] = int(np.ceil(current_size[v] / 2))
        kernels.append(list(kernel))
        strides.append(stride)
    kernels.append([3] * dim)  # bottleneck
    divisible = [2 ** n for n in num_pool]
    padded = [int(np.ceil(p / d) * d) for p, d in zip(patch_size, divisible)]
    return num_pool, strides, kernels, padded, divisible
