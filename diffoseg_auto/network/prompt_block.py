"""Stage II prompt blocks, chosen by name (the plans' ``stage2.prompt_block``; configuration.PROMPT_BLOCKS).

- ``residual`` (``PromptBlock``): a bank of learnable prompts mixed by the bottleneck features,
  fused into one map per rater; the requested rater's map is added back through a
  zero-initialised 1x1 conv, so a freshly built Stage II network equals its Stage I network.
- ``paper`` (``PaperPromptBlock``): the design of the official DiffOSeg code (written anew here):
  prompts mixed by the pooled features, a 3x3 conv, a stack of three conv-norm-nonlin layers
  that outputs ONE map per rater, the requested rater's map concatenated to the features, then
  three residual channel-attention blocks and a 1x1 conv back to the feature width. It replaces
  the features (no zero-initialised bypass), so Stage II starts close to, not equal to, Stage I.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffoseg_auto.configuration import PROMPT_BLOCKS
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

    def per_rater_parameters(self) -> dict[str, int]:
        """{name: rater axis}: the rater's 1x1 map and its bias."""
        return {"rater_weight": 0, "rater_bias": 0}

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


class ChannelAttentionBlock(nn.Module):
    """conv-PReLU-conv, channel attention (pooled features -> squeeze -> sigmoid gates), plus the input."""

    def __init__(self, channels: int, ops: ConvOps, reduction: int = 4):
        super().__init__()
        squeezed = max(1, channels // reduction)
        self.body = nn.Sequential(ops.conv_op(channels, channels, 3, 1, padding=1, bias=False), nn.PReLU(),
                                  ops.conv_op(channels, channels, 3, 1, padding=1, bias=False))
        self.gate = nn.Sequential(ops.conv_op(channels, squeezed, 1, bias=False), nn.ReLU(inplace=True),
                                  ops.conv_op(squeezed, channels, 1, bias=False), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        r = self.body(x)
        pooled = r.mean(dim=tuple(range(2, r.ndim)), keepdim=True)
        return x + r * self.gate(pooled)


class PaperPromptBlock(nn.Module):
    """The official DiffOSeg prompt block's design for 2D and 3D (see the module docstring).

    Differences from the official code, on purpose: prompts are ``prompt_size``^d maps (official
    96x96 with 128 channels, 5.9 M parameters interpolated down to the bottleneck anyway), the
    rater-map stack has ``num_raters`` outputs (official: 4, fixed), norm/nonlin are the plans'.
    """

    def __init__(self, channels: int, num_raters: int, num_prompts: int, prompt_dim: int, ops: ConvOps,
                 prompt_size: int = 8, num_attention_blocks: int = 3):
        super().__init__()
        if num_prompts < 1 or prompt_dim < 1:
            raise ValueError(f"PaperPromptBlock: num_prompts and prompt_dim must be >= 1, got {num_prompts}, {prompt_dim}")
        self.num_raters = num_raters
        self.interp_mode = {2: "bilinear", 3: "trilinear"}[ops.dims]
        self.prompts = nn.Parameter(torch.rand(num_prompts, prompt_dim, *([prompt_size] * ops.dims)))
        self.mix = nn.Linear(channels, num_prompts)
        self.prompt_conv = ops.conv_op(prompt_dim, prompt_dim, 3, 1, padding=1, bias=False)

        def conv_norm_nonlin(cin: int, cout: int) -> list[nn.Module]:
            return [ops.conv_op(cin, cout, 3, 1, padding=1, bias=True), ops.norm_op(cout, **ops.norm_kwargs),
                    ops.nonlin(**ops.nonlin_kwargs)]
        self.rater_maps = nn.Sequential(*conv_norm_nonlin(channels + prompt_dim, channels),
                                        *conv_norm_nonlin(channels, channels),
                                        *conv_norm_nonlin(channels, num_raters))
        self.attention = nn.Sequential(*[ChannelAttentionBlock(channels + 1, ops) for _ in range(num_attention_blocks)],
                                       ops.conv_op(channels + 1, channels, 1, bias=False))

    def per_rater_parameters(self) -> dict[str, int]:
        """{name: rater axis}: the rater's output channel of the last conv of the rater-map stack and of its norm."""
        conv_index, norm_index = len(self.rater_maps) - 3, len(self.rater_maps) - 2
        return {f"rater_maps.{i}.{k}": 0 for i in (conv_index, norm_index)
                for k, _ in self.rater_maps[i].named_parameters()}

    def forward(self, x: Tensor, rater_id: Tensor) -> Tensor:
        w = torch.softmax(self.mix(x.mean(dim=tuple(range(2, x.ndim)))), dim=1)
        prompt = torch.einsum("bp,pc...->bc...", w, self.prompts)
        prompt = self.prompt_conv(nn.functional.interpolate(prompt, size=x.shape[2:], mode=self.interp_mode,
                                                            align_corners=False))
        maps = self.rater_maps(torch.cat([x, prompt], dim=1))  # (B, R, *S): one map per rater
        chosen = maps[torch.arange(x.shape[0], device=x.device), rater_id].unsqueeze(1)
        return self.attention(torch.cat([x, chosen], dim=1))


def make_prompt_block(kind: str, channels: int, num_raters: int, num_prompts: int, prompt_dim: int,
                      ops: ConvOps) -> nn.Module:
    """``kind`` 'residual' (the project's) or 'paper' (the official design)."""
    if kind == "residual":
        return PromptBlock(channels, num_raters, num_prompts, prompt_dim, ops)
    if kind == "paper":
        return PaperPromptBlock(channels, num_raters, num_prompts, prompt_dim, ops)
    raise ValueError(f"stage2.prompt_block must be one of {PROMPT_BLOCKS}, got '{kind}'. Fix it in the plans.")
