"""Stop training at the first non-finite loss or gradient, before the weights are changed.

A NaN step would poison the weights and every later checkpoint; stopping before the optimizer
step leaves the checkpoints on disk at the last good epoch. With AMP the gradient scaler owns
non-finite gradients (it skips that step and lowers the scale), so there only the loss is checked.
"""
from __future__ import annotations

from pathlib import Path

import torch

from diffoseg_auto.errors import UserError
from diffoseg_auto.results_layout import CHECKPOINTS


class NonFiniteTrainingError(UserError):
    """The loss or the gradient norm became NaN/Inf."""


def raise_if_non_finite(loss: torch.Tensor, grad_norm: torch.Tensor, amp: bool, epoch: int, stage: int,
                        fold: int | str, output_folder: Path) -> None:
    loss_ok = bool(torch.isfinite(loss.detach()).all())
    grad_ok = amp or bool(torch.isfinite(grad_norm).all())
    if loss_ok and grad_ok:
        return
    what = f"training loss {float(loss.detach()):g}" if not loss_ok else f"gradient norm {float(grad_norm):g}"
    kept = sorted(name for name in CHECKPOINTS if (Path(output_folder) / name).is_file())
    raise NonFiniteTrainingError(
        f"stage {stage}, fold {fold}: non-finite {what} at epoch {epoch}; training stopped before the weights "
        f"changed. Checkpoints of the last good epochs in {output_folder}: {kept or 'none yet'}. Check the data for "
        "NaN/Inf (diffoseg_verify_dataset) or lower the learning rate, then continue with --c or start over.")
