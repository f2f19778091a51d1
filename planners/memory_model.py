"""GPU memory estimate of one training step of the DiffOSeg denoiser (Stage II, the larger one).

Counted per sample (activations kept for the backward pass, mixed precision = 2 bytes each):
- input: image C + one-hot x_t K + rater one-hot R channels at full resolution;
- image encoder: per stage n_conv x (conv, norm, nonlinearity) outputs of f_s channels;
- x_t path (cached_encoder layout): the same with f_s // x_t_width_divisor channels;
- time conditioning: the sinusoidal embedding MLP (tiny) and one scale/shift-modulated copy of
  every stage's features;
- decoder: transposed conv output, skip concatenation (2 f_s), n_conv_dec x 3 tensors, modulation;
- prompt block at the bottleneck: q/k/v-like projections (3 f_b) and the token-prompt
  attention map (voxels_b x num_prompts);
- output: logits, softmax and per-voxel loss terms (3 K).
Plus the largest stage tensor twice as transient gradient buffers, and per parameter 20 bytes
(fp32 weights, gradients, two AdamW moments, EMA copy), plus a fixed CUDA context / cuDNN
workspace overhead. It is a model, calibrated to land near nnU-Net's 3D 128^3 / batch 2 at 8 GB.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

BYTES_PER_ACTIVATION = 2
BYTES_PER_PARAMETER = 20
FIXED_OVERHEAD_BYTES = 1.0 * 1024 ** 3


def stage_voxels(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[int]:
    cum = np.cumprod(np.asarray(strides, dtype=np.int64), axis=0)
    return [int(np.prod(np.ceil(np.asarray(patch_size) / c))) for c in cum]


@dataclass(frozen=True)
class DenoiserShape:
    """What the memory model counts of a planned denoiser: its topology (one entry per resolution stage, as
    ArchitecturePlan) and the channels of its inputs."""

    features: Sequence[int]
    kernel_sizes: Sequence[Sequence[int]]
    strides: Sequence[Sequence[int]]
    n_conv: Sequence[int]
    n_conv_dec: Sequence[int]
    num_input_channels: int
    num_classes: int
    num_raters: int
    time_dim: int = 128
    x_t_width_divisor: int = 4
    num_prompts: int = 8
    prompt_dim: int = 32

    @property
    def xt_channels(self) -> int:
        """Channels of the x_t path's input: the one-hot x_t and the rater one-hot (Stage II)."""
        return self.num_classes + self.num_raters


def count_parameters(net: DenoiserShape) -> int:
    n = 0
    prev_img, prev_xt = net.num_input_channels, net.xt_channels
    for s, f in enumerate(net.features):
        k = int(np.prod(net.kernel_sizes[s]))
        fx = max(1, f // net.x_t_width_divisor)
        for i in range(net.n_conv[s]):
            n += (prev_img if i == 0 else f) * f * k
            n += (prev_xt if i == 0 else fx) * fx * k
        n += net.time_dim * 2 * f  # scale and shift per stage
        prev_img, prev_xt = f, fx
    for s in range(len(net.features) - 1):
        f, fb = net.features[s], net.features[s + 1]
        k = int(np.prod(net.kernel_sizes[s]))
        n += fb * f * int(np.prod(net.strides[s + 1]))  # transposed conv
        for i in range(net.n_conv_dec[s]):
            n += (2 * f if i == 0 else f) * f * k
        n += net.time_dim * 2 * f
    n += net.time_dim * net.time_dim * 4 * 2  # time MLP
    fb = net.features[-1]
    n += net.num_prompts * net.prompt_dim + 3 * fb * (fb + net.prompt_dim)  # prompt bank and projections
    return int(n)


def activation_elements_per_sample(patch_size: Sequence[int], net: DenoiserShape) -> int:
    vox = stage_voxels(patch_size, net.strides)
    total = (net.num_input_channels + net.xt_channels) * vox[0]
    largest = 0
    for s, f in enumerate(net.features):
        fx = max(1, f // net.x_t_width_divisor)
        total += net.n_conv[s] * 3 * (f + fx) * vox[s] + f * vox[s]
        largest = max(largest, f * vox[s])
    for s in range(len(net.features) - 1):
        f = net.features[s]
        total += (f + 2 * f + net.n_conv_dec[s] * 3 * f + f) * vox[s]
    total += 3 * net.features[-1] * vox[-1] + vox[-1] * net.num_prompts
    total += 3 * net.num_classes * vox[0]
    return int(total + 2 * largest)


def estimate_memory_bytes(patch_size: Sequence[int], batch_size: int, net: DenoiserShape) -> float:
    """Bytes needed to train the Stage II denoiser ``net`` on patches of ``patch_size`` in batches of ``batch_size``."""
    act = activation_elements_per_sample(patch_size, net)
    return FIXED_OVERHEAD_BYTES + count_parameters(net) * BYTES_PER_PARAMETER + batch_size * act * BYTES_PER_ACTIVATION
