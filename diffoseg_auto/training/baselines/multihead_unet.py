"""Multi-head U-Net trainer: head r learns rater r's masks (Dice + CE); a rater who did not
annotate a case (``rater_mask`` False) is left out of that case's loss."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from diffoseg_auto.network.baselines.multihead_unet import MultiHeadUNet
from diffoseg_auto.training.baselines.base_trainer import BaselineTrainer
from diffoseg_auto.training.baselines.losses import dice_ce_per_sample, masked_mean


class MultiHeadUNetTrainer(BaselineTrainer):
    network_class = MultiHeadUNet

    def compute_loss(self, network, data: Tensor, seg: np.ndarray, rater_mask: np.ndarray) -> Tensor:
        logits = network(data).float().flatten(0, 1)  # (B*R, K, *P): row b*R + r = head r on case b
        labels = torch.from_numpy(seg).to(self.device).flatten(0, 1)
        mask = torch.from_numpy(rater_mask).to(self.device).flatten()
        return masked_mean(dice_ce_per_sample(logits, labels), mask)
