"""The paper's layout: one U-Net on [image, x_t one-hot (, rater one-hot)] concatenated.

Every sampling step runs the whole network, image path included (see unet_cached.py for the
faster layout)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffoseg_auto.network.arguments import PromptArguments, UNetArguments
from diffoseg_auto.network.blocks import TimestepEmbedding, init_film_network, rater_input_map
from diffoseg_auto.network.denoiser_base import ImageInputDenoiser
from diffoseg_auto.network.film_unet import FiLMDecoder, FiLMEncoder


class ConcatUNetDenoiser(ImageInputDenoiser):
    def __init__(self, unet: UNetArguments, num_input_channels: int, num_classes: int, num_raters: int | None = None,
                 time_embedding_dim: int = 128, prompt: PromptArguments = PromptArguments()):
        ops = unet.ops()
        super().__init__(num_input_channels, num_classes, num_raters, ops.dims)
        f = list(unet.features_per_stage)
        self.time_embedding = TimestepEmbedding(time_embedding_dim)
        emb = self.time_embedding.out_dim
        self.encoder = FiLMEncoder(ops, num_input_channels + num_classes, f, unet.kernel_sizes, unet.strides,
                                   unet.n_conv_per_stage, emb)
        self.decoder = FiLMDecoder(ops, f, unet.kernel_sizes, unet.strides, unet.n_conv_per_stage_decoder, emb,
                                   num_classes)
        init_film_network(self)
        self._add_stage2_modules(ops, f[0], unet.kernel_sizes[0], unet.strides[0], f[-1], prompt)

    def denoise(self, cache: Any, x_t: Tensor, t: Tensor, rater_id: Tensor | None = None) -> Tensor:
        t, rater_onehot = self._check_inputs(x_t, t, rater_id)
        image = self._image_from_cache(cache, x_t)
        emb = self._embed(t, rater_onehot)
        extra = None
        if rater_onehot is not None:
            extra = rater_input_map(self.rater_input, rater_onehot, tuple(x_t.shape[2:]))
        skips = self.encoder(torch.cat([image, x_t], dim=1), emb, first_extra=extra)
        if rater_onehot is not None:
            skips[-1] = self.prompt_block(skips[-1], rater_onehot.argmax(1))
        return self.decoder(skips, emb)
