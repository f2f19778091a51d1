"""Stop training at the first non-finite loss or gradient, before the weights are changed.

A NaN step would poison the weights and every later checkpoint; stopping before the optimizer
step leaves the checkpoints on disk at the last good epoch. Only an enabled GradScaler (fp16) owns
non-finite gradients (it skips that step and lowers the scale), so then only the loss is checked;
under bf16 nothing skips the step, so the gradient is checked as in float32. Under DDP the decision
is shared: every rank stops at the same step (a rank that raised alone would leave the others
waiting in the next collective).
"""
from __future__ import annotations

from pathlib import Path

import torch

from diffoseg_auto.errors import UserError
from diffoseg_auto.results_layout import CHECKPOINTS
from diffoseg_auto.training import ddp


class NonFiniteTrainingError(UserError):
    """The loss or the gradient norm became NaN/Inf."""


def non_finite_problem(loss: torch.Tensor, grad_norm: torch.Tensor, scaler_enabled: bool) -> str | None:
    """What is non-finite ('training loss nan', 'gradient norm inf', ...), the same on every rank; None when all is."""
    loss_ok = bool(torch.isfinite(loss.detach()).all())
    grad_ok = scaler_enabled or bool(torch.isfinite(grad_norm).all())
    if not ddp.any_rank(not (loss_ok and grad_ok), loss.device):
        return None
    return (f"training loss {float(loss.detach()):g}" if not loss_ok else
            f"gradient norm {float(grad_norm):g}" if not grad_ok else "loss or gradient on another rank")


def raise_if_non_finite(loss: torch.Tensor, grad_norm: torch.Tensor, scaler_enabled: bool, epoch: int, stage: int,
                        fold: int | str, output_folder: Path) -> None:
    what = non_finite_problem(loss, grad_norm, scaler_enabled)
    if what is None:
        return
    kept = sorted(name for name in CHECKPOINTS if (Path(output_folder) / name).is_file())
    raise NonFiniteTrainingError(
        f"stage {stage}, fold {fold}: non-finite {what} at epoch {epoch}; training stopped before the weights "
        f"changed. Checkpoints of the last good epochs in {output_folder}: {kept or 'none yet'}. Check the data for "
        "NaN/Inf (diffoseg_verify_dataset) or lower the learning rate, then continue with --c or start over.")
