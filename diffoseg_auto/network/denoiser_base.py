"""Common interface of every denoiser: encode the image once, denoise many times.

Sampling calls the network steps x samples x windows x mirrorings times, but the image of a
window never changes. ``encode`` holds everything that depends on the image only, ``denoise``
everything that depends on x_t, t and the rater. Layouts without an image-only part simply
return the image from ``encode``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from diffoseg_auto.network.arguments import PromptArguments
from diffoseg_auto.network.blocks import is_channels_last


class DenoiserBase(nn.Module):
    """Predicts logits of x_0 (B, K, *S) from the image, the noisy one-hot x_t and the timestep.

    ``num_raters`` is None for Stage I (consensus) and R for Stage II (per-rater prompts).
    Subclasses implement ``encode`` and ``denoise``; ``forward`` chains them.
    """

    # names of parameter groups that exist only in Stage II (prompt block, rater input);
    # freeze_backbone keeps exactly these trainable
    stage2_param_prefixes: tuple[str, ...] = ("prompt_block.", "rater_input.", "rater_embedding.")

    def __init__(self, num_input_channels: int, num_classes: int, num_raters: int | None, spatial_dims: int):
        super().__init__()
        if num_raters is not None and num_raters < 1:
            raise ValueError(f"num_raters must be >= 1 for a Stage II network (or None for Stage I), got {num_raters}")
        self.num_input_channels = int(num_input_channels)
        self.num_classes = int(num_classes)
        self.num_raters = None if num_raters is None else int(num_raters)
        self.spatial_dims = int(spatial_dims)

    def encode(self, image: Tensor) -> Any:
        raise NotImplementedError

    def denoise(self, cache: Any, x_t: Tensor, t: Tensor, rater_id: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def forward(self, image: Tensor, x_t: Tensor, t: Tensor, rater_id: Tensor | None = None) -> Tensor:
        return self.denoise(self.encode(image), x_t, t, rater_id)

    # ------------------------------------------------------------ construction helpers shared by all layouts

    def _add_stage2_modules(self, ops: Any, first_width: int, first_kernel: list[int], first_stride: list[int],
                            bottleneck_width: int, prompt: PromptArguments) -> None:
        """Stage II only: the zero-initialised rater input and the prompt block (``residual``: Stage II
        starts as Stage I; ``paper``: the official design, which replaces the bottleneck features)."""
        if self.num_raters is None:
            return
        from diffoseg_auto.network.blocks import make_rater_input
        from diffoseg_auto.network.prompt_block import make_prompt_block

        self.rater_input = make_rater_input(ops, self.num_raters, first_width, first_kernel, first_stride)
        self.prompt_block = make_prompt_block(prompt.block, bottleneck_width, self.num_raters, prompt.num_prompts,
                                              prompt.prompt_dim, ops)
        # The rater one-hot enters as constant input planes (the paper), but instance/group norm
        # subtracts a spatially constant offset, so that path barely reaches deeper layers. The
        # rater is therefore also added to the timestep embedding, which drives the scale/shift
        # of every stage. Zero-initialised: Stage II starts as Stage I.
        self.rater_embedding = nn.Linear(self.num_raters, self.time_embedding.out_dim, bias=False)
        nn.init.zeros_(self.rater_embedding.weight)

    def per_rater_parameters(self) -> dict[str, int]:
        """{parameter name: its rater axis} of every Stage II parameter that has one row per rater (the rater
        embedding, the rater input's channel, the prompt block's rater maps); {} for Stage I."""
        if self.num_raters is None:
            return {}
        rows = {"rater_embedding.weight": 1, "rater_input.weight": 1}
        rows.update({f"prompt_block.{k}": axis for k, axis in self.prompt_block.per_rater_parameters().items()})
        return rows

    def _embed(self, t: Tensor, rater_onehot: Tensor | None) -> Tensor:
        """Timestep embedding, plus the rater's embedding in Stage II."""
        emb = self.time_embedding(t)
        if rater_onehot is not None:
            emb = emb + self.rater_embedding(rater_onehot.to(emb.dtype))
        return emb

    # ------------------------------------------------------------ input checks shared by all layouts

    def _image_from_cache(self, cache: Any, x_t: Tensor) -> Tensor:
        """Layouts whose cache is the image itself: it must line up with x_t row by row."""
        if cache.shape[0] != x_t.shape[0] or cache.shape[2:] != x_t.shape[2:]:
            raise ValueError(f"{type(self).__name__}.denoise: image {tuple(cache.shape)} and x_t {tuple(x_t.shape)} "
                             "must have the same batch size and spatial shape (expand_cache the image first)")
        return cache

    def _check_image(self, image: Tensor) -> None:
        if image.ndim != 2 + self.spatial_dims or image.shape[1] != self.num_input_channels:
            raise ValueError(
                f"{type(self).__name__}.encode: image must be (B, {self.num_input_channels}, "
                f"{', '.join(['*'] * self.spatial_dims)}), got {tuple(image.shape)}"
            )

    def _check_inputs(self, x_t: Tensor, t: Tensor, rater_id: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Validate x_t / t / rater_id; return t as (B,) and the rater one-hot (B, R) or None."""
        name = type(self).__name__
        if x_t.ndim != 2 + self.spatial_dims or x_t.shape[1] != self.num_classes:
            raise ValueError(f"{name}.denoise: x_t must be one-hot (B, K={self.num_classes}, *S) with "
                             f"{self.spatial_dims} spatial dims, got {tuple(x_t.shape)}")
        b = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"{name}.denoise: t must be a LongTensor (B,) = ({b},), got shape {tuple(t.shape)}")
        if self.num_raters is None:
            if rater_id is not None:
                raise ValueError(f"{name}.denoise: this is a Stage I (consensus) network; it takes no rater_id. "
                                 "Build the Stage II network (build_denoiser(..., stage=2)) for per-rater sampling.")
            return t, None
        if rater_id is None:
            raise ValueError(f"{name}.denoise: Stage II network needs rater_id (B,) in 0..{self.num_raters - 1}")
        rater_id = torch.as_tensor(rater_id, device=x_t.device).long()
        if rater_id.ndim == 0:
            rater_id = rater_id.expand(b)
        if rater_id.shape != (b,):
            raise ValueError(f"{name}.denoise: rater_id must have shape ({b},), got {tuple(rater_id.shape)}")
        if int(rater_id.min()) < 0 or int(rater_id.max()) >= self.num_raters:
            raise ValueError(f"{name}.denoise: rater_id must be in 0..{self.num_raters - 1}, got {rater_id.tolist()}")
        return t, nn.functional.one_hot(rater_id, self.num_raters).to(x_t.dtype)


class ImageInputDenoiser(DenoiserBase):
    """Layouts that take the image together with x_t at the input (the paper's): nothing to cache
    but the image itself, so ``encode`` is the identity."""

    def encode(self, image: Tensor) -> Any:
        self._check_image(image)
        return image


def expand_cache(cache: Any, n: int) -> Any:
    """Repeat every tensor of an ``encode`` result n times along dim 0 (repeat_interleave).

    Row b of the input becomes rows b*n .. b*n+n-1, matching x_t batches laid out as
    (image, sample) pairs. Works on nested lists, tuples and dicts; non-tensors pass through.
    """
    if n < 1:
        raise ValueError(f"expand_cache: n must be >= 1, got {n}")
    if isinstance(cache, Tensor):
        if n == 1:
            return cache
        # repeat_interleave returns NCHW even for a channels-last cache, and adding an NCHW tensor to the
        # channels-last x_t features takes a slow strided path: keep the cache's memory format
        fmt = torch.channels_last if is_channels_last(cache) else torch.contiguous_format
        out = torch.empty((cache.shape[0] * n, *cache.shape[1:]), dtype=cache.dtype, device=cache.device,
                          memory_format=fmt)
        out.unflatten(0, (cache.shape[0], n)).copy_(cache.unsqueeze(1))
        return out
    if isinstance(cache, dict):
        return {k: expand_cache(v, n) for k, v in cache.items()}
    if isinstance(cache, list):
        return [expand_cache(v, n) for v in cache]
    if isinstance(cache, tuple):
        out = [expand_cache(v, n) for v in cache]
        return type(cache)(*out) if hasattr(cache, "_fields") else tuple(out)  # namedtuples take positional args
    return cache
