"""Segmentation losses of the baselines: nnU-Net's Dice + CE, per sample so that a sample can be left out."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SMOOTH = 1e-5  # nnU-Net's soft-Dice smoothing: an empty target predicted empty scores Dice 1


def soft_dice_per_sample(probs: Tensor, labels: Tensor) -> Tensor:
    """Mean soft Dice over the foreground classes per sample: probs (B,K,*S), labels (B,*S) int -> (B,)."""
    onehot = F.one_hot(labels.long(), probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    axes = tuple(range(2, probs.ndim))
    inter = (probs * onehot).sum(axes)
    denom = probs.sum(axes) + onehot.sum(axes)
    return ((2 * inter + SMOOTH) / (denom + SMOOTH))[:, 1:].mean(1)


def dice_ce_per_sample(logits: Tensor, labels: Tensor) -> Tensor:
    """CE (mean over voxels) + (1 - soft Dice) per sample: logits (B,K,*S), labels (B,*S) -> (B,)."""
    ce = F.cross_entropy(logits, labels.long(), reduction="none").flatten(1).mean(1)
    return ce + 1.0 - soft_dice_per_sample(torch.softmax(logits, 1), labels)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` is True (0 with a graph when nothing is selected)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)
