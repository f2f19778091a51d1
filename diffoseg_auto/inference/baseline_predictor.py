"""Sliding-window prediction of the baseline networks (whole image, Gaussian blending, mirroring, folds).

A baseline network maps a batch of windows to M output probability maps per window
(``window_probabilities``: (B, M, K, *P)); M is 1 (consensus U-Net), the number of heads
(multi-head U-Net) or the number of samples (Probabilistic U-Net: one latent draw per sample,
shared by all windows, mirrorings and folds, so a sample stays one segmentation of the image).
The blended maps are argmax-ed into (M, *S) label maps; the network's ``to_predictions`` turns
them into the N samples and the per-rater predictions that diffoseg_predict writes. Windows,
padding, 2d-on-3D slicing and mirroring are DiffOSegPredictor's (both use window_geometry.py).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from diffoseg_auto.inference.window_geometry import flip, from_net, mirror_combinations, to_net, window_grid
from diffoseg_auto.network.baselines.base import BaselineNetwork
from diffoseg_auto.plans.plans import ConfigurationPlan

WINDOWS_PER_CALL = 4  # windows per forward pass of a deterministic network


def labels_of(probabilities: np.ndarray) -> np.ndarray:
    """(M, K, *S) class probabilities -> (M, *S) uint8 label maps."""
    return np.argmax(probabilities, axis=1).astype(np.uint8)


class BaselinePredictor:
    def __init__(self, network: BaselineNetwork | Sequence[BaselineNetwork], configuration: ConfigurationPlan,
                 device: torch.device | str = "cpu", use_mirroring: bool = True, step_size: float = 0.5):
        nets = list(network) if isinstance(network, (list, tuple)) else [network]
        if not nets:
            raise ValueError("BaselinePredictor needs at least one network")
        if not 0 < step_size <= 1:
            raise ValueError(f"step_size must be in (0, 1], got {step_size}")
        self.device = torch.device(device)
        self.networks = [n.to(self.device).eval() for n in nets]
        self.configuration = configuration
        self.step_size = float(step_size)
        self.use_mirroring = bool(use_mirroring)
        self.mirrors = mirror_combinations(configuration, self.use_mirroring)

    def predict_case(self, data: np.ndarray, num_samples: int, seed: int = 0) -> np.ndarray:
        """``data`` (C, *S) preprocessed image -> (M, *S) uint8 label maps in preprocessed geometry."""
        return labels_of(self.predict_probabilities(data, num_samples, seed))

    @torch.no_grad()
    def predict_probabilities(self, data: np.ndarray, num_samples: int, seed: int = 0) -> np.ndarray:
        """``data`` (C, *S) preprocessed image -> (M, K, *S) float32 softmax probabilities (blended windows, mean
        over folds and mirrorings) in preprocessed geometry; M outputs as in ``predict_case``."""
        data = np.asarray(data)
        if data.ndim < 3:
            raise ValueError(f"predict_case: data must be channel first (C, *S), got shape {data.shape}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        latent_dim = self.networks[0].latent_dim
        eps = (torch.randn(int(num_samples), latent_dim, generator=torch.Generator().manual_seed(int(seed)))
               .to(self.device) if latent_dim else None)
        ax = self.configuration.slice_axis
        image, windows, gauss, weight_sum, unpad = window_grid(self.configuration, data, self.step_size, self.device)
        acc = None
        per_call = 1 if latent_dim else WINDOWS_PER_CALL  # a stochastic network gives N outputs per window
        for i in range(0, len(windows), per_call):
            chunk = windows[i:i + per_call]
            probs = self._window_probs(to_net(torch.stack([image[(slice(None), *sl)] for sl in chunk], 0), ax), eps)
            w, m = probs.shape[:2]
            probs = from_net(probs.flatten(0, 1), ax).unflatten(0, (w, m)) * gauss
            if acc is None:
                acc = torch.zeros((m, probs.shape[2], *image.shape[1:]), device=self.device)
            for b, sl in enumerate(chunk):
                acc[(slice(None), slice(None), *sl)] += probs[b]
        return (acc / weight_sum)[(slice(None), slice(None), *unpad)].cpu().numpy().astype(np.float32)

    def _window_probs(self, windows: Tensor, eps: Tensor | None) -> Tensor:
        """Mean over folds and mirrorings of the networks' (B, M, K, *P) probabilities."""
        total = None
        for net in self.networks:
            for axes in self.mirrors:
                p = net.window_probabilities(flip(windows, axes), eps).float()
                p = flip(p.flatten(0, 1), axes).unflatten(0, p.shape[:2])
                total = p if total is None else total + p
        return total / (len(self.networks) * len(self.mirrors))
