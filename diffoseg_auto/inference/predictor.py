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

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
from diffoseg_auto.inference.batching import rows_per_call, split_work
from diffoseg_auto.inference.window_geometry import flip, from_net, mirror_combinations, to_net, window_grid
from diffoseg_auto.network.denoiser_base import DenoiserBase, expand_cache
from diffoseg_auto.plans.plans import ConfigurationPlan
from diffoseg_auto.runtime.compilation import maybe_compile
from diffoseg_auto.runtime.precision import autocast, autocast_dtype


@dataclass(frozen=True)
class PredictorSettings:
    """How DiffOSegPredictor runs: mirroring and window step (the windows), rows per call, autocast, compilation."""
    use_mirroring: bool = True      # mirroring TTA over the configuration's mirror axes
    step_size: float = 0.5          # window step as a fraction of the patch, in (0, 1]
    max_batch: int | None = None    # rows (windows x mirrorings x samples) per network call (None: the plans' budget)
    precision: str | None = None    # autocast: auto | bf16 | fp16 | fp32 (None: the plans' inference.precision)
    compile_network: bool = False   # torch.compile the networks' denoise


class DiffOSegPredictor:
    """Samples label maps for one preprocessed case.

    ``network``: one denoiser or a list (fold ensemble: x_0 probabilities averaged over folds at
    every step). All networks must be of the same stage (Stage I: no rater; Stage II: rater prompts).
    ``settings``: mirroring, window step, rows per network call, autocast and compilation (PredictorSettings).
    """

    def __init__(self, network: DenoiserBase | Sequence[DenoiserBase], diffusion: CategoricalDiffusion,
                 configuration: ConfigurationPlan, device: torch.device | str = "cpu",
                 settings: PredictorSettings = PredictorSettings()):
        step_size, max_batch = settings.step_size, settings.max_batch
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
        self.amp_dtype = autocast_dtype(settings.precision or configuration.inference.precision, self.device)
        self._denoise: list[Callable] = [maybe_compile(n.denoise, settings.compile_network) for n in self.networks]
        self.use_mirroring = bool(settings.use_mirroring)
        self.mirror_combinations = mirror_combinations(configuration, self.use_mirroring)

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

        image, windows, gauss, weight_sum, unpad = window_grid(self.configuration, data, self.step_size, self.device)
        spatial = tuple(image.shape[1:])
        weight_sum = weight_sum.reciprocal_()

        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        # one autocast region for the whole case: autocast casts each float32 weight once and reuses the cast
        # until the outermost region ends, instead of at every step's network call. The diffusion math in the
        # region is elementwise float32, which autocast leaves alone.
        with autocast(self.device, self.amp_dtype):
            denoise_fn = self.full_image_denoiser(image, windows, gauss, weight_sum, raters, n_samples)
            labels = self.diffusion.sample(denoise_fn, (n_samples, K, *spatial), int(sampling_steps),
                                           final_step=final_step, generator=generator, device=self.device)
        labels = labels[(slice(None), *unpad)]
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
        ax = self.configuration.slice_axis
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
                    xw = to_net(torch.stack([x_t[(slice(j0, j1), slice(None), *sl)] for sl in chunk], 0).flatten(0, 1), ax)
                    tw = t[j0:j1].repeat(w * n_mirror)
                    rw = None if raters is None else raters[j0:j1].repeat(w * n_mirror)
                    x_rows = torch.cat([flip(xw, axes) for axes in self.mirror_combinations], 0)
                    x_rows = x_rows.contiguous(memory_format=self.memory_format)
                    probs = None
                    for denoise, cache in zip(self._denoise, chunk_caches):
                        with autocast(self.device, self.amp_dtype):
                            logits = denoise(expand(cache, n), x_rows, tw, rw)
                        p = torch.softmax(logits.float(), dim=1).unflatten(0, (n_mirror, w * n))
                        p = sum(flip(p[m], axes) for m, axes in enumerate(self.mirror_combinations))
                        probs = p if probs is None else probs + p
                    probs = from_net(probs / n_rows, ax).unflatten(0, (w, n)) * gauss
                    for b, sl in enumerate(chunk):
                        acc[(slice(j0, j1), slice(None), *sl)] += probs[b]
            return acc * inv_weight_sum

        return denoise_fn

    def _encode_chunk(self, image: Tensor, chunk: list[tuple[slice, ...]]) -> list[Any]:
        """Per fold: the encoder output of the chunk's windows under every mirroring, rows (mirror, window)."""
        img = to_net(torch.stack([image[(slice(None), *sl)] for sl in chunk], 0), self.configuration.slice_axis)
        img = torch.cat([flip(img, axes) for axes in self.mirror_combinations], 0)
        img = img.contiguous(memory_format=self.memory_format)
        out = []
        for net in self.networks:
            with autocast(self.device, self.amp_dtype):
                out.append(net.encode(img))
        return out
