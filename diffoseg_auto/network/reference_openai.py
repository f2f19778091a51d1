"""Reference denoiser for benchmarks: an OpenAI guided-diffusion (ADM) style U-Net, as used
by the DiffOSeg paper. ResBlocks (GroupNorm, SiLU, time embedding as scale-shift of the norm), self-attention at
chosen feature resolutions, concat input layout, same Stage II prompt block as our networks.
Written from the architecture description; settings: ``reference`` (the plans' architecture.reference)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from diffoseg_auto.network.arguments import PromptArguments
from diffoseg_auto.network.blocks import (
    ChannelGroupNorm,
    ConvOps,
    TimestepEmbedding,
    film,
    he_init,
    rater_planes,
    zero_module,
)
from diffoseg_auto.network.denoiser_base import ImageInputDenoiser

REFERENCE_DEFAULTS = {"base_channels": 32, "channel_mult": [1, 2, 3, 4], "num_res_blocks": 2,
                      "attention_resolutions": [16, 8], "num_heads": 4}


class ResBlock(nn.Module):
    def __init__(self, conv_op: type, in_ch: int, out_ch: int, emb_dim: int):
        super().__init__()
        self.in_layers = nn.Sequential(ChannelGroupNorm(in_ch), nn.SiLU(), conv_op(in_ch, out_ch, 3, padding=1))
        # scale-shift norm (ADM's use_scale_shift_norm): an additive embedding before GroupNorm would be
        # removed entirely when groups == channels (e.g. base 32 with 32 groups)
        self.emb_layers = nn.Linear(emb_dim, 2 * out_ch)
        self.out_norm = ChannelGroupNorm(out_ch)
        # zero-init last conv: every block starts as identity (ADM)
        self.out_layers = nn.Sequential(nn.SiLU(), zero_module(conv_op(out_ch, out_ch, 3, padding=1)))
        self.skip = nn.Identity() if in_ch == out_ch else conv_op(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = film(self.out_norm(self.in_layers(x)), self.emb_layers(emb))
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    def __init__(self, conv_op: type, ch: int, num_heads: int):
        super().__init__()
        if ch % num_heads:
            raise ValueError(f"reference network: {ch} channels are not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = ChannelGroupNorm(ch)
        self.qkv = conv_op(ch, 3 * ch, 1)
        self.proj_out = zero_module(conv_op(ch, ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, -1)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))     # (B, heads, N, d)
        h = nn.functional.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(h.transpose(-1, -2).reshape(x.shape))


class Downsample(nn.Module):
    def __init__(self, conv_op: type, ch: int):
        super().__init__()
        self.conv = conv_op(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, conv_op: type, ch: int):
        super().__init__()
        self.conv = conv_op(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


class Level(nn.ModuleList):
    """ResBlock followed by optional attention and/or resampling; run in order."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for m in self:
            x = m(x, emb) if isinstance(m, ResBlock) else m(x)
        return x


class ReferenceOpenAIUNet(ImageInputDenoiser):
    def __init__(self, reference: dict, ops: ConvOps, patch_size: list[int], num_input_channels: int,
                 num_classes: int, num_raters: int | None = None, prompt: PromptArguments = PromptArguments()):
        super().__init__(num_input_channels, num_classes, num_raters, ops.dims)
        unknown = set(reference) - set(REFERENCE_DEFAULTS)
        if unknown:
            raise ValueError(f"architecture.reference: unknown key(s) {sorted(unknown)}; known: {sorted(REFERENCE_DEFAULTS)}")
        cfg = {**REFERENCE_DEFAULTS, **reference}
        base, mult, nres, heads = (int(cfg["base_channels"]), list(cfg["channel_mult"]), int(cfg["num_res_blocks"]),
                                   int(cfg["num_heads"]))
        attn_res = {int(r) for r in cfg["attention_resolutions"]}
        factor = 2 ** (len(mult) - 1)
        if any(p % factor for p in patch_size):
            raise ValueError(f"reference network: patch_size {patch_size} must be divisible by {factor} "
                             f"(2^(len(channel_mult)-1))")
        conv = ops.conv_op
        self.time_embedding = TimestepEmbedding(base, 4 * base)
        emb = self.time_embedding.out_dim
        self.input_conv = conv(num_input_channels + num_classes, base, 3, padding=1)
        self.input_blocks = nn.ModuleList()
        skip_ch, ch, res = [base], base, min(patch_size)
        for level, m in enumerate(mult):
            for _ in range(nres):
                blk = Level([ResBlock(conv, ch, m * base, emb)])
                ch = m * base
                if res in attn_res:
                    blk.append(AttentionBlock(conv, ch, heads))
                self.input_blocks.append(blk)
                skip_ch.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(Level([Downsample(conv, ch)]))
                skip_ch.append(ch)
                res //= 2
        self.middle = Level([ResBlock(conv, ch, ch, emb), AttentionBlock(conv, ch, heads), ResBlock(conv, ch, ch, emb)])
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(nres + 1):
                blk = Level([ResBlock(conv, ch + skip_ch.pop(), m * base, emb)])
                ch = m * base
                if res in attn_res:
                    blk.append(AttentionBlock(conv, ch, heads))
                if level and i == nres:
                    blk.append(Upsample(conv, ch))
                    res *= 2
                self.output_blocks.append(blk)
        self.out = nn.Sequential(ChannelGroupNorm(ch), nn.SiLU(), conv(ch, num_classes, 3, padding=1))
        # He init everywhere, then restore ADM's zero-initialised residual outputs
        he_init(self)
        for mod in self.modules():
            if isinstance(mod, ResBlock):
                zero_module(mod.out_layers[-1])
            elif isinstance(mod, AttentionBlock):
                zero_module(mod.proj_out)
        self._add_stage2_modules(ops, base, [3] * ops.dims, [1] * ops.dims, mult[-1] * base, prompt)

    def denoise(self, cache: Any, x_t: Tensor, t: Tensor, rater_id: Tensor | None = None) -> Tensor:
        t, rater_onehot = self._check_inputs(x_t, t, rater_id)
        image = self._image_from_cache(cache, x_t)
        emb = self._embed(t, rater_onehot)
        h = self.input_conv(torch.cat([image, x_t], dim=1))
        if rater_onehot is not None:
            h = h + self.rater_input(rater_planes(rater_onehot, tuple(x_t.shape[2:])))
        skips = [h]
        for blk in self.input_blocks:
            h = blk(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        if rater_onehot is not None:
            h = self.prompt_block(h, rater_onehot.argmax(1))
        for blk in self.output_blocks:
            h = blk(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
