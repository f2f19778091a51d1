"""Multi-head U-Net: one shared U-Net body, one 1x1 output head per rater.

The R heads are one 1x1 convolution with R*K outputs (head r = channels r*K .. r*K+K-1; the heads
share nothing but the body, so this is exactly R separate 1x1 heads). Samples are the heads
(cycled to N when N > R), the prediction for rater r is head r.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from diffoseg_auto.network.arguments import UNetArguments
from diffoseg_auto.network.baselines.base import BaselineNetwork
from diffoseg_auto.network.baselines.unet_builder import plain_unet


class MultiHeadUNet(BaselineNetwork):
    def __init__(self, unet: UNetArguments, num_input_channels: int, num_classes: int, num_raters: int):
        super().__init__()
        if num_raters < 1:
            raise ValueError(f"MultiHeadUNet needs raters (one head each), got num_raters={num_raters}")
        self.num_heads, self.num_classes = num_raters, num_classes
        self.unet = plain_unet(unet, num_input_channels, self.num_heads * self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, *P) -> (B, R, K, *P) logits of every head."""
        return self.unet(x).unflatten(1, (self.num_heads, self.num_classes))

    def window_probabilities(self, x: Tensor, eps: Tensor | None) -> Tensor:
        return torch.softmax(self(x).float(), 2)

    def to_predictions(self, outputs: np.ndarray, num_samples: int, num_raters: int,
                       num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        return outputs[np.arange(num_samples) % outputs.shape[0]], outputs
