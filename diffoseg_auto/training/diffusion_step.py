"""The diffusion training step, one owner: DiffOSegTrainer (both stages) and diffoseg_add_rater (a new expert's
prompt, Stage II with only the new rows trainable) run the same loss and the same optimisation step.

- ``DiffusionLoss``: the stage's targets (Stage I: the consensus of the annotating raters; Stage II: one annotating
  rater per sample and its id), timesteps and forward noise from the epoch's generators, the network under the
  trainer's autocast, and the KL (+ x0 CE) loss in float32;
- ``optimizer_step``: backward through the GradScaler, gradient clipping over the optimiser's parameters, the
  non-finite check (before the weights change), the step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
from diffoseg_auto.plans.plans import TrainingPlan
from diffoseg_auto.runtime.precision import autocast
from diffoseg_auto.training.targets import consensus_targets, rater_targets


def batch_images(batch: dict, device: torch.device) -> torch.Tensor:
    """The batch's images (B,C,*P) as a float tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(batch["data"])).to(device, non_blocking=True)


@dataclass(frozen=True)
class DiffusionLoss:
    """The diffusion loss of one batch for ``stage`` (1: consensus targets, 2: per-rater targets and prompts)."""

    diffusion: CategoricalDiffusion
    num_classes: int
    stage: int
    training: TrainingPlan            # consensus_target, x0_ce_weight
    device: torch.device
    amp_dtype: torch.dtype | None     # network autocast dtype (None = float32)

    def __call__(self, network: Callable, batch: dict, target_rng: np.random.RandomState,
                 torch_gen: torch.Generator) -> torch.Tensor:
        data = batch_images(batch, self.device)
        seg, rmask, k = np.asarray(batch["seg"]), np.asarray(batch["rater_mask"], bool), self.num_classes
        if self.stage == 1:
            x0, rater_id = consensus_targets(seg, rmask, k, self.training.consensus_target, target_rng), None
        else:
            x0, ids = rater_targets(seg, rmask, k, target_rng)
            rater_id = torch.from_numpy(ids).to(self.device)
        x0 = torch.from_numpy(x0).to(self.device)
        t = self.diffusion.sample_timesteps(x0.shape[0], self.device, torch_gen)
        x_t = self.diffusion.q_sample(x0, t, torch_gen)
        with autocast(self.device, self.amp_dtype):
            logits = network(data, x_t, t, rater_id)
        # outside the autocast region: the posterior and KL stay in float32 (see runtime/precision.py)
        return self.diffusion.training_loss(x0, F.softmax(logits.float(), dim=1), x_t, t,
                                            x0_ce_weight=self.training.x0_ce_weight)


# (loss, gradient norm, GradScaler enabled) -> raises when the step must not be taken (finite_guard.py)
FiniteCheck = Callable[[torch.Tensor, torch.Tensor, bool], None]


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, grad_scaler: torch.amp.GradScaler,
                   grad_clip: float, check_finite: FiniteCheck) -> float:
    """Backward, clip and step the optimiser's parameters (only those: a frozen or masked rest stays put);
    ``check_finite`` runs before the step, so a non-finite loss or gradient leaves the weights unchanged."""
    optimizer.zero_grad(set_to_none=True)
    grad_scaler.scale(loss).backward()
    grad_scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    check_finite(loss, grad_norm, grad_scaler.is_enabled())
    grad_scaler.step(optimizer)
    grad_scaler.update()
    return float(loss.detach().cpu())
