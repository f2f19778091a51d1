"""Sliding-window prediction of the baseline networks (whole image, Gaussian blending, mirroring, folds).

A baseline network maps a batch of windows to M output probability maps per window
(``window_probabilities``: (B, M, K, *P)); M is 1 (consensus U-Net), the number of heads
(multi-head U-Net) or the number of samples (Probabilistic U-Net, one latent draw per sample
shared by all windows, mirrorings and folds, so a sample stays one segmentation of the image).
The blended maps are argmax-ed into (M, *S) label maps; the network's ``to_predictions`` turns
them into the N samples and the per-rater predictions that diffoseg_predict writes.

The geometry (padding, window grid, 2d-on-3D slicing, mirroring) is DiffOSegPredictor's.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from torch import nn

from diffoseg_auto.inference.predictor import DiffOSegPredictor
from diffoseg_auto.inference.sliding_window import compute_gaussian, sliding_window_slicers
from diffoseg_auto.plans.plans import ConfigurationPlan


class BaselinePredictor(DiffOSegPredictor):
    def __init__(self, network: nn.Module | Sequence[nn.Module], configuration: ConfigurationPlan,
                 device: torch.device | str = "cpu", use_mirroring: bool = True, step_size: float = 0.5):
        super().__init__(network, None, configuration, device, use_mirroring, step_size)

    @torch.no_grad()
    def predict_case(self, data: np.ndarray, num_samples: int, seed: int = 0) -> np.ndarray:
        """``data`` (C, *S) preprocessed image -> (M, *S) uint8 label maps in preprocessed geometry."""
        data = np.asarray(data)
        if data.ndim < 3:
            raise ValueError(f"predict_case: data must be channel first (C, *S), got shape {data.shape}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        net0 = self.networks[0]
        generator = torch.Generator().manual_seed(int(seed))
        eps = (torch.randn(int(num_samples), net0.latent_dim, generator=generator).to(self.device)
               if net0.latent_dim else None)
        vol_patch = self._volume_patch(data.ndim - 1)
        image = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(self.device)
        image, unpad = pad_nd_image(image, vol_patch, "constant", {"value": 0}, True)
        spatial = tuple(image.shape[1:])
        windows = sliding_window_slicers(spatial, vol_patch, self.step_size)
        gauss = self._from_net(compute_gaussian(self.configuration.patch_size, device=self.device)[None, None])[0, 0]
        per_call = max(1, int(self.configuration.inference.windows_per_batch))
        acc, weight_sum = None, torch.zeros(spatial, device=self.device)
        for i in range(0, len(windows), per_call):
            chunk = windows[i:i + per_call]
            probs = self._window_probs(self._to_net(torch.stack([image[(slice(None), *sl)] for sl in chunk], 0)), eps)
            w, m = probs.shape[:2]
            probs = self._from_net(probs.flatten(0, 1)).unflatten(0, (w, m)) * gauss
            if acc is None:
                acc = torch.zeros((m, probs.shape[2], *spatial), device=self.device)
            for b, sl in enumerate(chunk):
                acc[(slice(None), slice(None), *sl)] += probs[b]
                weight_sum[sl] += gauss
        labels = torch.argmax(acc / weight_sum, dim=1)[(slice(None), *unpad[1:])]
        return labels.to(torch.uint8).cpu().numpy()

    def _window_probs(self, windows: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        """Mean over folds and mirrorings of the networks' (B, M, K, *P) probabilities."""
        total, n = None, 0
        for net in self.networks:
            for axes in self.mirror_combinations:
                with self._autocast():
                    p = net.window_probabilities(self._flip(windows, axes), eps).float()
                p = self._flip(p.flatten(0, 1), axes).unflatten(0, p.shape[:2])
                total = p if total is None else total + p
                n += 1
        return total / n
