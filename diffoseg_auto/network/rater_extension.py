"""A Stage II network for one more rater: the trained weights, with one new row of every per-rater parameter.

``diffoseg_add_rater`` fits only those rows (DenoiserBase.per_rater_parameters: the rater embedding, the rater
input's channel, the prompt block's rater map). The new row starts as the mean of the existing raters' rows, so
the new prompt starts as "the average rater" rather than as the consensus, which is the closest a style can be
known before its cases are seen. Every other weight, and every existing rater's row, is copied unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor

from diffoseg_auto.network.denoiser_base import DenoiserBase


class RaterExtensionError(ValueError):
    pass


def extended_state_dict(state: dict[str, Tensor], extended: DenoiserBase) -> dict[str, Tensor]:
    """``state`` of an R-rater network as the state of ``extended`` (R+1 raters): per-rater rows + their mean."""
    rows = extended.per_rater_parameters()
    if not rows:
        raise RaterExtensionError(f"{type(extended).__name__} is a Stage I network: it has no per-rater parameters")
    target = extended.state_dict()
    out = {}
    for name, value in state.items():
        if name in rows:
            axis = rows[name]
            value = torch.cat([value, value.mean(dim=axis, keepdim=True)], dim=axis)
        if name not in target or tuple(target[name].shape) != tuple(value.shape):
            raise RaterExtensionError(f"parameter {name}: shape {tuple(value.shape)} does not fit the extended "
                                      f"network's {tuple(target[name].shape) if name in target else 'none'}")
        out[name] = value
    missing = set(target) - set(out)
    if missing:
        raise RaterExtensionError(f"the trained weights lack {sorted(missing)[:3]}")
    return out


def train_only_new_rater(network: DenoiserBase) -> list[Tensor]:
    """Freeze every weight except the last (new) row of each per-rater parameter; returns the trainable tensors.

    Gradients of the frozen rows are zeroed by a hook, so an optimiser without weight decay (Adam) leaves them
    bit-identical."""
    rows = network.per_rater_parameters()
    trainable = []
    for name, p in network.named_parameters():
        if name not in rows:
            p.requires_grad_(False)
            continue
        p.requires_grad_(True)
        mask = torch.zeros_like(p)
        mask.narrow(rows[name], p.shape[rows[name]] - 1, 1).fill_(1.0)
        p.register_hook(lambda g, m=mask: g * m)
        trainable.append(p)
    return trainable
