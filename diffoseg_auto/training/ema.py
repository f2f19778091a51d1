"""Exponential moving average of network weights (used for validation, inference and saved as network_weights)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay} (plans training.ema_decay)")
        self.decay = float(decay)
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """Warm-up: min(decay, (1 + n) / (10 + n)) after n updates.

        Without it a short run (a CPU budget of a few hundred iterations at decay 0.999) would
        validate and predict with weights that are still half the random initialisation."""
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema = d * ema + (1 - d) * w for floating tensors (d = current_decay()); buffers are copied."""
        d = self.current_decay()
        self.num_updates += 1
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
