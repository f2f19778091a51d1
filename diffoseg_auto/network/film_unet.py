"""Time-conditioned U-Net encoder and decoder (plans topology), shared by the concat and
cached-encoder layouts."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from diffoseg_auto.network.blocks import ConvOps, FiLMConvStage, pointwise_conv


class FiLMEncoder(nn.Module):
    """One FiLMConvStage per plans stage: kernel_sizes[s], strides[s] (first conv), n_conv_per_stage[s]."""

    def __init__(self, ops: ConvOps, in_ch: int, features: list[int], kernel_sizes: list[list[int]],
                 strides: list[list[int]], n_conv: list[int], emb_dim: int):
        super().__init__()
        self.stages = nn.ModuleList()
        for s, f in enumerate(features):
            self.stages.append(FiLMConvStage(n_conv[s], ops, in_ch, f, kernel_sizes[s], strides[s], emb_dim))
            in_ch = f

    def forward(self, x: Tensor, emb: Tensor, first_extra: Tensor | None = None,
                after_stage: Callable[[int, Tensor], Tensor] | None = None) -> list[Tensor]:
        """Return the skips (output of every stage); ``after_stage(s, h)`` may fuse extra features."""
        skips = []
        for s, stage in enumerate(self.stages):
            x = stage(x, emb, first_extra if s == 0 else None)
            if after_stage is not None:
                x = after_stage(s, x)
            skips.append(x)
        return skips


class FiLMDecoder(nn.Module):
    """Transposed conv (kernel = stride = strides[s+1]) -> concat skip -> FiLMConvStage, then a 1x1 head."""

    def __init__(self, ops: ConvOps, features: list[int], kernel_sizes: list[list[int]], strides: list[list[int]],
                 n_conv_decoder: list[int], emb_dim: int, num_classes: int):
        super().__init__()
        n = len(features)
        self.upsample = nn.ModuleList()
        self.stages = nn.ModuleList()
        for s in range(n - 2, -1, -1):
            self.upsample.append(ops.transp_op(features[s + 1], features[s], strides[s + 1], strides[s + 1],
                                               bias=ops.conv_bias))
            self.stages.append(FiLMConvStage(n_conv_decoder[s], ops, 2 * features[s], features[s], kernel_sizes[s], 1,
                                             emb_dim))
        self.head = ops.conv_op(features[0], num_classes, 1, 1, bias=True)

    def forward(self, skips: list[Tensor], emb: Tensor) -> Tensor:
        x = skips[-1]
        for i, (up, stage) in enumerate(zip(self.upsample, self.stages)):
            x = stage(torch.cat([up(x), skips[-(i + 2)]], dim=1), emb)
        return pointwise_conv(self.head, x)
