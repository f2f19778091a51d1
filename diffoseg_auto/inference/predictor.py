"""Whole-image diffusion sampling with sliding windows, mirroring TTA and fold ensembles.

The reverse chain runs on the WHOLE (padded) preprocessed image: at every step the x_0
probabilities of all windows (each mirrored and each fold, averaged) are blended with a
Gaussian importance map into one full-image x_0 map, and x_{t-1} is drawn from the exact
posterior mixture on the full image. Samples therefore stay coherent across window borders.

Every window image is encoded once per mirroring and fold (``net.encode``); the caches are
reused for all steps and all N samples and rater prompts (``expand_cache``), so a step costs only
``denoise``. A step batches windows x mirrorings x samples/prompts into as few denoiser calls as
the plans' memory budget allows (``batching.py``); the network runs under the configured autocast
(``runtime/precision.py``) in channels-last layout (2D), the full-image x_0 blending and the
posterior stay in float32.

A 2d configuration of 3D data (``configuration.slice_axis`` set) treats the volume with a
window of one voxel along the slice axis: every slice is a 2D image and slices are batched
like windows. The chain still runs on the whole volume (one x_t per sample).
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from torch import Tensor

from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
from diffoseg_auto.inference.batching import rows_per_call, split_work
from diffoseg_auto.inference.sliding_window import compute_gaussian, sliding_window_slicers
from diffoseg_auto.network.denoiser_base import DenoiserBase, expand_cache
from diffoseg_auto.plans.plans import ConfigurationPlan
from diffoseg_auto.runtime.compilation import maybe_compile
from diffoseg_auto.runtime.precision import autocast, autocast_dtype


class DiffOSegPredictor:
    """Samples label maps for one preprocessed case.

    ``network``: one denoiser or a list (fold ensemble: x_0 probabilities averaged over folds at
    every step). All networks must be of the same stage (Stage I: no rater; Stage II: rater prompts).
    ``max_batch``: rows (windows x mirrorings x samples) per network call; default from the plans'
    ``inference.batch_memory_mb``. ``precision``: autocast (auto | bf16 | fp16 | fp32), default the
    plans' ``inference.precision``. ``compile_network``: torch.compile the networks' denoise.
    """

    def __init__(self, network: DenoiserBase | Sequence[DenoiserBase], diffusion: CategoricalDiffusion,
                 configuration: ConfigurationPlan, device: torch.device | str = "cpu", use_mirroring: bool = True,
                 step_size: float = 0.5, max_batch: int | None = None, precision: str | None = None,
                 compile_network: bool = False):
        nets = list(network) if isinstance(network, (list, tuple)) else [network]
        if not nets:
            raise ValueError("DiffOSegPredictor needs at least one network")
        stages = {getattr(n, "num_raters", None) for n in nets}
        if len(stages) != 1:
            raise ValueError(f"All networks of an ensemble must be of the same stage; got num_raters {sorted(map(str, stages))}")
        if not 0 < step_size <= 1:
            raise ValueError(f"step_size must be in (0, 1], got {step_size}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.device = torch.device(device)
        # channels-last: oneDNN / cuDNN run 2D convolutions without layout reorders (about 1.5x on the CPU)
        self.memory_format = torch.channels_last if configuration.spatial_dims == 2 else torch.contiguous_format
        self.networks = [n.to(self.device, memory_format=self.memory_format).eval() for n in nets]
        self.num_raters: int | None = stages.pop()
        self.diffusion = diffusion
        self.configuration = configuration
        self.step_size = float(step_size)
        self.max_batch = max_batch
        self.amp_dtype = autocast_dtype(precision or configuration.inference.precision, self.device)
        self._denoise: list[Callable] = [maybe_compile(n.denoise, compile_network) for n in self.networks]
        self.use_mirroring = bool(use_mirroring)
        axes = list(configuration.augmentation.mirror_axes) if use_mirroring else []
        # all subsets of the mirror axes (identity first), as nnU-Net's TTA
        self.mirror_combinations: list[tuple[int, ...]] = [
            c for r in range(len(axes) + 1) for c in itertools.combinations(sorted(axes), r)]

    # ------------------------------------------------------------------ geometry helpers
    def _volume_patch(self, ndim: int) -> list[int]:
        """Window size in the coordinates of the sampled array (1 along the slice axis of 2d-on-3D)."""
        cfg = self.configuration
        patch = [int(p) for p in cfg.patch_size]
        if cfg.slice_axis is None:
            if ndim != cfg.spatial_dims:
                raise ValueError(f"sample_case: data has {ndim} spatial dims but the configuration is {cfg.spatial_dims}d "
                                 "(and has no slice_axis). Preprocess the case with the same configuration.")
            return patch
        if ndim != cfg.spatial_dims + 1:
            raise ValueError(f"sample_case: a 2d configuration with slice_axis={cfg.slice_axis} expects 3D data (C, Z, Y, X), "
                             f"got {ndim} spatial dims")
        return patch[:cfg.slice_axis] + [1] + patch[cfg.slice_axis:]

    def _to_net(self, window: Tensor) -> Tensor:
        """(B, C, *vol_patch) -> (B, C, *net_patch): drop the slice axis of 2d-on-3D."""
        ax = self.configuration.slice_axis
        return window if ax is None else window.squeeze(ax + 2)

    def _from_net(self, window: Tensor) -> Tensor:
        ax = self.configuration.slice_axis
        return window if ax is None else window.unsqueeze(ax + 2)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_case(self, data: np.ndarray, num_samples: int, sampling_steps: int,
                    rater_id: int | Sequence[int] | None = None, seed: int = 0, final_step: str | None = None) -> np.ndarray:
        """``data`` (C, *S) preprocessed image -> (N, *S) uint8 label samples in preprocessed geometry.

        ``rater_id`` (Stage II only): one rater for all samples, or one per sample (length N), so that
        all raters of a case share one encoding of the windows.
        """
        data = np.asarray(data)
        if data.ndim < 3:
            raise ValueError(f"sample_case: data must be channel first (C, *S), got shape {data.shape}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        raters = self._rater_ids(rater_id, int(num_samples))
        final_step = final_step or self.configuration.diffusion.final_step
        n_samples = int(num_samples)
        K = self.diffusion.num_classes

        vol_patch = self._volume_patch(data.ndim - 1)
        image = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(self.device)
        image, unpad = pad_nd_image(image, vol_patch, "constant", {"value": 0}, True)
        spatial = tuple(image.shape[1:])
        windows = sliding_window_slicers(spatial, vol_patch, self.step_size)

        # Gaussian blending weights: per-window map and the full-image normaliser
        gauss = self._from_net(compute_gaussian(self.configuration.patch_size, device=self.device)[None, None])[0, 0]
        weight_sum = torch.zeros(spatial, device=self.device)
        for sl in windows:
            weight_sum[sl] += gauss
        weight_sum = weight_sum.reciprocal_()

        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        # one autocast region for the whole case: autocast casts each float32 weight once and reuses the cast
        # until the outermost region ends, instead of at every step's network call. The diffusion math in the
        # region is elementwise float32, which autocast leaves alone.
        with autocast(self.device, self.amp_dtype):
            denoise_fn = self.full_image_denoiser(image, windows, gauss, weight_sum, raters, n_samples)
            labels = self.diffusion.sample(denoise_fn, (n_samples, K, *spatial), int(sampling_steps),
                                           final_step=final_step, generator=generator, device=self.device)
        labels = labels[(slice(None), *unpad[1:])]
        return labels.to(torch.uint8).cpu().numpy()

    def sample_raters(self, data: np.ndarray, rater_ids: Sequence[int], samples_per_rater: int, sampling_steps: int,
                      seed: int = 0) -> list[np.ndarray]:
        """Stage II: ``samples_per_rater`` samples for every rater in ``rater_ids``, all in one chain batch (the
        windows are encoded once for every prompt) -> one (samples_per_rater, *S) array per rater, in order."""
        n = int(samples_per_rater)
        rs = self.sample_case(data, len(rater_ids) * n, sampling_steps, rater_id=np.repeat(rater_ids, n), seed=seed)
        return [rs[k * n:(k + 1) * n] for k in range(len(rater_ids))]

    def _rater_ids(self, rater_id: int | Sequence[int] | None, num_samples: int) -> Tensor | None:
        """Validated per-sample rater ids (N,) on the device, or None for Stage I."""
        if self.num_raters is None:
            if rater_id is not None:
                raise ValueError("sample_case: rater_id given, but the network is a Stage I (consensus) model. "
                                 "Load the Stage II model for per-rater sampling.")
            return None
        if rater_id is None:
            raise ValueError(f"sample_case: the Stage II model needs rater_id in 0..{self.num_raters - 1}, got None")
        ids = np.atleast_1d(np.asarray(rater_id, dtype=np.int64))
        if ids.size == 1:
            ids = np.full(num_samples, int(ids[0]), dtype=np.int64)
        if ids.shape != (num_samples,):
            raise ValueError(f"sample_case: rater_id needs one entry or one per sample ({num_samples}), got {ids.size}")
        if ids.min() < 0 or ids.max() >= self.num_raters:
            raise ValueError(f"sample_case: the Stage II model needs rater_id in 0..{self.num_raters - 1}, got {ids.tolist()}")
        return torch.from_numpy(ids).to(self.device)

    def full_image_denoiser(self, image: Tensor, windows: list[tuple[slice, ...]], gauss: Tensor, inv_weight_sum: Tensor,
                            raters: Tensor | None, n_samples: int) -> Callable[[Tensor, Tensor], Tensor]:
        """The sampler's denoise_fn: x_t (N, K, *S) -> blended x_0 probabilities (N, K, *S), float32.

        Windows are encoded here, once per mirroring and fold, for all samples and prompts."""
        n_mirror = len(self.mirror_combinations)
        max_rows = self.max_batch or rows_per_call(self.configuration, self.diffusion.num_classes)
        win_per_call, samples_per_call = split_work(len(windows), n_mirror, n_samples, max_rows)
        chunks = [windows[i:i + win_per_call] for i in range(0, len(windows), win_per_call)]
        caches = [self._encode_chunk(image, chunk) for chunk in chunks]  # caches[chunk][fold]: rows (mirror, window)
        n_rows = n_mirror * len(self.networks)
        if len(chunks) == 1 and samples_per_call >= n_samples:
            # one network call per step: expand the cache to its rows once, not at every step (the call's memory
            # budget already holds the expanded cache)
            caches = [[expand_cache(c, n_samples) for c in caches[0]]]
            expand = lambda cache, n: cache  # noqa: E731
        else:
            expand = expand_cache

        def denoise_fn(x_t: Tensor, t: Tensor) -> Tensor:
            acc = torch.zeros_like(x_t)
            for chunk, chunk_caches in zip(chunks, caches):
                w = len(chunk)
                for j0 in range(0, n_samples, samples_per_call):
                    j1 = min(n_samples, j0 + samples_per_call)
                    n = j1 - j0
                    # rows (window, sample) for one mirroring, then repeated per mirroring: (mirror, window, sample)
                    xw = self._to_net(torch.stack([x_t[(slice(j0, j1), slice(None), *sl)] for sl in chunk], 0).flatten(0, 1))
                    tw = t[j0:j1].repeat(w * n_mirror)
                    rw = None if raters is None else raters[j0:j1].repeat(w * n_mirror)
                    x_rows = torch.cat([self._flip(xw, axes) for axes in self.mirror_combinations], 0)
                    x_rows = x_rows.contiguous(memory_format=self.memory_format)
                    probs = None
                    for denoise, cache in zip(self._denoise, chunk_caches):
                        with autocast(self.device, self.amp_dtype):
                            logits = denoise(expand(cache, n), x_rows, tw, rw)
                        p = torch.softmax(logits.float(), dim=1).unflatten(0, (n_mirror, w * n))
                        p = sum(self._flip(p[m], axes) for m, axes in enumerate(self.mirror_combinations))
                        probs = p if probs is None else probs + p
                    probs = self._from_net(probs / n_rows).unflatten(0, (w, n)) * gauss
                    for b, sl in enumerate(chunk):
                        acc[(slice(j0, j1), slice(None), *sl)] += probs[b]
            return acc * inv_weight_sum

        return denoise_fn

    def _encode_chunk(self, image: Tensor, chunk: list[tuple[slice, ...]]) -> list[Any]:
        """Per fold: the encoder output of the chunk's windows under every mirroring, rows (mirror, window)."""
        img = self._to_net(torch.stack([image[(slice(None), *sl)] for sl in chunk], 0))
        img = torch.cat([self._flip(img, axes) for axes in self.mirror_combinations], 0)
        img = img.contiguous(memory_format=self.memory_format)
        out = []
        for net in self.networks:
            with autocast(self.device, self.amp_dtype):
                out.append(net.encode(img))
        return out

    @staticmethod
    def _flip(x: Tensor, axes: tuple[int, ...]) -> Tensor:
        return torch.flip(x, [a + 2 for a in axes]) if axes else x
