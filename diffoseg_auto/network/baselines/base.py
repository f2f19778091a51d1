"""Interface of the baseline networks, as the sliding-window predictor and the exporters use it."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from torch import Tensor, nn


class BaselineNetwork(nn.Module, ABC):
    """Built from torch-level arguments, the same for every baseline: ``(unet: UNetArguments, num_input_channels,
    num_classes, num_raters)`` (plans/network_arguments.py translates the plans).
    ``latent_dim`` > 0: stochastic, one latent draw eps[n] per sample n (shared by all windows)."""
    latent_dim = 0
    # True: one deterministic output whose softmax is the method's soft consensus (its calibration, issue 20)
    soft_consensus = False

    @abstractmethod
    def window_probabilities(self, x: Tensor, eps: Tensor | None) -> Tensor:
        """(B, C, *P) windows -> (B, M, K, *P) class probabilities of the network's M outputs."""

    @abstractmethod
    def to_predictions(self, outputs: np.ndarray, num_samples: int, num_raters: int,
                       num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """(M, *S) label maps -> N samples (N, *S) and one prediction per rater (R, *S)."""


def majority_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Label-wise majority of (n, *S) label maps -> (*S) uint8; ties go to the lower class (background)."""
    counts = np.stack([(labels == c).sum(0) for c in range(num_classes)])
    return counts.argmax(0).astype(np.uint8)
