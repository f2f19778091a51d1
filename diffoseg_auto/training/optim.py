"""Optimizer and learning-rate schedule from the plans."""
from __future__ import annotations

import torch
from torch import nn


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]  # frozen backbone stays out
    if not params:
        raise ValueError("No trainable parameters (is the whole network frozen?).")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimizer '{name}' (plans training.optimizer: adam | adamw)")


def lr_at_progress(initial_lr: float, progress: float, schedule: str = "poly", exponent: float = 0.9) -> float:
    """poly: initial * (1 - progress) ** exponent, ``progress`` in [0, 1] the share of the stage done (nnU-Net: epoch /
    num_epochs; under --max_minutes also the spent share of the budget, training/stage_budget.py); constant: initial."""
    if schedule == "constant":
        return initial_lr
    if schedule != "poly":
        raise ValueError(f"Unknown lr_schedule '{schedule}' (plans training.lr_schedule: poly | constant)")
    return initial_lr * (1 - min(max(progress, 0.0), 1.0)) ** exponent


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
