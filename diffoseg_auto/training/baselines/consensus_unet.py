"""Consensus U-Net trainers: Dice + CE on one consensus of the raters who annotated each case.

- ``ConsensusUNetTrainer``: their majority vote (ties -> background, as evaluation.metrics.majority_vote):
  what nnU-Net would be given.
- ``ConsensusUNetSTAPLETrainer``: their STAPLE consensus (evaluation.staple, SimpleITK's filters), the classic
  label fusion that multi-rater papers report. STAPLE is run on each training patch after augmentation (the
  raters' masks of that patch), since the data loader crops and deforms the raters' masks, not a stored target.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from diffoseg_auto.evaluation.metrics import majority_vote
from diffoseg_auto.evaluation.staple import staple_consensus
from diffoseg_auto.network.baselines.consensus_unet import ConsensusUNet, STAPLEConsensusUNet
from diffoseg_auto.training.baselines.base_trainer import BaselineTrainer
from diffoseg_auto.training.baselines.losses import dice_ce_per_sample


def consensus_targets(seg: np.ndarray, rater_mask: np.ndarray, num_classes: int,
                      fuse: Callable[[np.ndarray, int], np.ndarray] = majority_vote) -> np.ndarray:
    """(B,R,*P) labels and (B,R) mask -> (B,*P) ``fuse`` of each case's annotating raters."""
    return np.stack([fuse(seg[b][rater_mask[b]], num_classes) for b in range(seg.shape[0])])


class ConsensusUNetTrainer(BaselineTrainer):
    network_class = ConsensusUNet
    fuse = staticmethod(majority_vote)  # how the raters' masks become the one target

    def compute_loss(self, network, data: Tensor, seg: np.ndarray, rater_mask: np.ndarray) -> Tensor:
        target = consensus_targets(seg, rater_mask, self.plans.num_classes, self.fuse)
        return dice_ce_per_sample(network(data).float(), torch.from_numpy(target).to(self.device)).mean()


class ConsensusUNetSTAPLETrainer(ConsensusUNetTrainer):
    network_class = STAPLEConsensusUNet
    fuse = staticmethod(staple_consensus)
