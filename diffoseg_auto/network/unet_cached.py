"""Cached-encoder layout (default): the image encoder runs once per image/window, a light
time-conditioned x_t path and decoder run per sampling step.

Speed rationale: sampling costs steps x samples x windows x mirrorings forward passes. Here the
full-width image encoder runs only windows x mirrorings times (``encode``); its multi-scale
features are projected (1x1 conv, also in ``encode``) to the x_t path widths and cached.
Each step then runs only the x_t path and decoder at features // x_t_width_divisor channels
(~1/divisor^2 of the convolution FLOPs of a full-width U-Net).
"""
from __future__ import annotations

from typing import Any

from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from torch import Tensor, nn

from diffoseg_auto.network.arguments import PromptArguments, UNetArguments
from diffoseg_auto.network.blocks import TimestepEmbedding, init_film_network, rater_input_map
from diffoseg_auto.network.denoiser_base import DenoiserBase
from diffoseg_auto.network.film_unet import FiLMDecoder, FiLMEncoder


def light_widths(features: list[int], divisor: int, minimum: int = 4) -> list[int]:
    """x_t path / decoder widths: features // divisor, at least ``minimum`` channels."""
    if divisor < 1:
        raise ValueError(f"architecture.x_t_width_divisor must be >= 1, got {divisor}. Fix it in the plans.")
    return [max(minimum, f // divisor) for f in features]


class CachedEncoderDenoiser(DenoiserBase):
    def __init__(self, unet: UNetArguments, num_input_channels: int, num_classes: int, num_raters: int | None = None,
                 time_embedding_dim: int = 128, x_t_width_divisor: int = 4, prompt: PromptArguments = PromptArguments()):
        ops = unet.ops()
        super().__init__(num_input_channels, num_classes, num_raters, ops.dims)
        f = list(unet.features_per_stage)
        w = light_widths(f, x_t_width_divisor)
        self.light_features = w
        self.image_encoder = PlainConvEncoder(num_input_channels, unet.n_stages, f, ops.conv_op, unet.kernel_sizes,
                                              unet.strides, unet.n_conv_per_stage, ops.conv_bias, ops.norm_op,
                                              ops.norm_kwargs, None, None, ops.nonlin, ops.nonlin_kwargs,
                                              return_skips=True)
        # cached image features -> x_t path width, added to the x_t features at every scale
        self.image_projections = nn.ModuleList(ops.conv_op(fs, ws, 1, 1, bias=True) for fs, ws in zip(f, w))
        self.time_embedding = TimestepEmbedding(time_embedding_dim)
        emb = self.time_embedding.out_dim
        self.xt_encoder = FiLMEncoder(ops, num_classes, w, unet.kernel_sizes, unet.strides, unet.n_conv_per_stage, emb)
        self.decoder = FiLMDecoder(ops, w, unet.kernel_sizes, unet.strides, unet.n_conv_per_stage_decoder, emb,
                                   num_classes)
        init_film_network(self)
        self._add_stage2_modules(ops, w[0], unet.kernel_sizes[0], unet.strides[0], w[-1], prompt)

    def encode(self, image: Tensor) -> Any:
        """List of projected image features, one (B, w_s, *S_s) tensor per stage."""
        self._check_image(image)
        return [p(s) for p, s in zip(self.image_projections, self.image_encoder(image))]

    def denoise(self, cache: Any, x_t: Tensor, t: Tensor, rater_id: Tensor | None = None) -> Tensor:
        t, rater_onehot = self._check_inputs(x_t, t, rater_id)
        if not isinstance(cache, (list, tuple)) or len(cache) != len(self.light_features):
            raise ValueError("CachedEncoderDenoiser.denoise: cache must be the list returned by encode()")
        if cache[0].shape[0] != x_t.shape[0] or cache[0].shape[2:] != x_t.shape[2:]:
            raise ValueError(f"CachedEncoderDenoiser.denoise: cached features {tuple(cache[0].shape)} do not match "
                             f"x_t {tuple(x_t.shape)} (batch and spatial shape); use expand_cache(cache, n) for n "
                             "samples per image")
        emb = self._embed(t, rater_onehot)
        extra = None
        if rater_onehot is not None:
            extra = rater_input_map(self.rater_input, rater_onehot, tuple(x_t.shape[2:]))
        skips = self.xt_encoder(x_t, emb, first_extra=extra, after_stage=lambda s, h: h + cache[s])
        if rater_onehot is not None:
            skips[-1] = self.prompt_block(skips[-1], rater_onehot.argmax(1))
        return self.decoder(skips, emb)
