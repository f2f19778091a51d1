"""Consensus U-Net trainer: Dice + CE on the majority vote of the raters who annotated each case
(ties -> background, as evaluation.metrics.majority_vote): what nnU-Net would be given."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from diffoseg_auto.evaluation.metrics import majority_vote
from diffoseg_auto.network.baselines.consensus_unet import ConsensusUNet
from diffoseg_auto.training.baselines.base_trainer import BaselineTrainer
from diffoseg_auto.training.baselines.losses import dice_ce_per_sample


def majority_targets(seg: np.ndarray, rater_mask: np.ndarray, num_classes: int) -> np.ndarray:
    """(B,R,*P) labels and (B,R) mask -> (B,*P) majority of each case's annotating raters."""
    return np.stack([majority_vote(seg[b][rater_mask[b]], num_classes) for b in range(seg.shape[0])])


class ConsensusUNetTrainer(BaselineTrainer):
    network_class = ConsensusUNet

    def compute_loss(self, network, data: Tensor, seg: np.ndarray, rater_mask: np.ndarray) -> Tensor:
        target = torch.from_numpy(majority_targets(seg, rater_mask, self.plans.num_classes)).to(self.device)
        return dice_ce_per_sample(network(data).float(), target).mean()
