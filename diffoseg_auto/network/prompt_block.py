"""Stage II prompt block (DiffOSeg): a bank of learnable prompts mixed by the bottleneck
features, fused into one map per rater; the requested rater's map is added back through a
zero-initialised 1x1 conv, so a freshly built Stage II network equals its Stage I network."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffoseg_auto.network.blocks import ConvOps, zero_module


class PromptBlock(nn.Module):
    def __init__(self, channels: int, num_raters: int, num_prompts: int, prompt_dim: int, ops: ConvOps,
                 prompt_size: int = 4):
        super().__init__()
        if num_prompts < 1 or prompt_dim < 1:
            raise ValueError(f"PromptBlock: num_prompts and prompt_dim must be >= 1, got {num_prompts}, {prompt_dim}")
        self.num_raters = num_raters
        self.channels = channels
        dims = ops.dims
        self.interp_mode = {2: "bilinear", 3: "trilinear"}[dims]
        # (P, prompt_dim, 4, 4[, 4]): small learnable maps, interpolated to the bottleneck size
        self.prompts = nn.Parameter(torch.randn(num_prompts, prompt_dim, *([prompt_size] * dims)))
        self.mix = nn.Linear(channels, num_prompts)
        self.fuse = nn.Sequential(
            ops.conv_op(channels + prompt_dim, channels, 3, 1, padding=1, bias=True),
            ops.norm_op(channels, **ops.norm_kwargs),
            ops.nonlin(**ops.nonlin_kwargs),
        )
        # one 1x1 map per rater, R x C output channels; stored as (R, C_out, C_in) so only the
        # requested rater's map is computed (same result as a conv to R*C channels then selecting)
        self.rater_weight = nn.Parameter(torch.empty(num_raters, channels, channels))
        self.rater_bias = nn.Parameter(torch.zeros(num_raters, channels))
        nn.init.kaiming_normal_(self.rater_weight.view(num_raters * channels, channels), a=math.sqrt(5))
        self.out = zero_module(ops.conv_op(channels, channels, 1, 1, bias=True))

    def prompt_weights(self, x: Tensor) -> Tensor:
        """Softmax mixing weights over prompts from globally pooled features, (B, P)."""
        return torch.softmax(self.mix(x.mean(dim=tuple(range(2, x.ndim)))), dim=1)

    def forward(self, x: Tensor, rater_id: Tensor) -> Tensor:
        w = self.prompt_weights(x)
        prompt = torch.einsum("bp,pc...->bc...", w, self.prompts)
        prompt = nn.functional.interpolate(prompt, size=x.shape[2:], mode=self.interp_mode, align_corners=False)
        f = self.fuse(torch.cat([x, prompt], dim=1))
        rater_map = torch.einsum("boc,bc...->bo...", self.rater_weight[rater_id], f)
        rater_map = rater_map + self.rater_bias[rater_id].view(*rater_map.shape[:2], *([1] * (x.ndim - 2)))
        return x + self.out(rater_map)
