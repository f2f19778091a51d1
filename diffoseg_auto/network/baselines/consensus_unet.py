"""Consensus U-Net: a deterministic U-Net with the plans' topology (what nnU-Net trains on the
raters' majority vote). Its N samples are identical and every rater gets the same mask."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from diffoseg_auto.network.arguments import UNetArguments
from diffoseg_auto.network.baselines.base import BaselineNetwork
from diffoseg_auto.network.baselines.unet_builder import plain_unet


class ConsensusUNet(BaselineNetwork):
    soft_consensus = True

    def __init__(self, unet: UNetArguments, num_input_channels: int, num_classes: int, num_raters: int):
        super().__init__()
        self.unet = plain_unet(unet, num_input_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.unet(x)

    def window_probabilities(self, x: Tensor, eps: Tensor | None) -> Tensor:
        return torch.softmax(self.unet(x).float(), 1)[:, None]

    def to_predictions(self, outputs: np.ndarray, num_samples: int, num_raters: int,
                       num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(outputs[:1], num_samples, 0), np.repeat(outputs[:1], num_raters, 0)


class STAPLEConsensusUNet(ConsensusUNet):
    """The same network, trained on the raters' STAPLE consensus (ConsensusUNetSTAPLETrainer): its own class so that
    prediction names the trainer a checkpoint came from (BASELINE_NETWORKS is keyed both ways)."""
