"""Probabilistic U-Net trainer (Kohl et al., NeurIPS 2018): per case and patch one random annotating
rater's mask; loss CE + beta * KL(posterior || prior), z drawn from the posterior.

As in the paper the reconstruction term is summed over voxels; the whole loss is divided by the
voxel count, so its scale matches the other trainers' while the CE : KL ratio is the paper's.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diffoseg_auto.network.baselines.prob_unet import ProbabilisticUNet
from diffoseg_auto.training.baselines.base_trainer import BaselineTrainer
from diffoseg_auto.training.targets import rater_targets


class ProbUNetTrainer(BaselineTrainer):
    network_class = ProbabilisticUNet
    beta = 1.0  # the paper's weight of the KL term

    def compute_loss(self, network, data: Tensor, seg: np.ndarray, rater_mask: np.ndarray) -> Tensor:
        _, ids = rater_targets(seg, rater_mask, self.plans.num_classes, self.target_rng)
        labels = torch.from_numpy(seg[np.arange(seg.shape[0]), ids]).to(self.device)
        logits, kl = network(data, labels)
        return F.cross_entropy(logits.float(), labels.long()) + self.beta * kl.mean() / math.prod(labels.shape[1:])
