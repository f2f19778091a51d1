"""Checkpoint files (see documentation/architecture.md): atomic saves, loading and compatibility checks.

Neutral ground: training writes checkpoints and inference reads them, so neither imports the other."""
from __future__ import annotations

from pathlib import Path

import torch

from diffoseg_auto.errors import UserError
from diffoseg_auto.utilities.file_ops import atomic_write

# init_args entries that must match for a checkpoint to be resumed / transferred by this run
IDENTITY_KEYS = ("trainer_name", "plans_name", "configuration", "dataset_name", "num_raters", "num_classes")


class CheckpointError(UserError, RuntimeError):
    pass


def save_checkpoint(path: str | Path, checkpoint: dict) -> None:
    """torch.save to a temporary file in the same folder, then rename: never a half-written .pth."""
    atomic_write(path, lambda p: torch.save(checkpoint, p))


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found.")
    fix = ("Restore it, or delete it and write it again (diffoseg_train ... --c resumes from the latest checkpoint; "
           "a final or added-rater checkpoint comes from training or diffoseg_add_rater again).")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch.load raises many kinds (EOFError, RuntimeError, UnpicklingError, ...) for a bad file
        what = "is empty" if path.stat().st_size == 0 else f"cannot be read, cut short or not a checkpoint ({type(e).__name__})"
        raise CheckpointError(f"{path}: {what}. {fix}") from None
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt or not isinstance(ckpt.get("init_args"), dict):
        raise CheckpointError(f"{path}: not a diffoseg_auto checkpoint (no network_weights / init_args). {fix}")
    return ckpt


def check_compatible(ckpt: dict, expected: dict, path: str | Path, keys: tuple[str, ...] = IDENTITY_KEYS) -> None:
    """Raise when ``ckpt`` was trained on another dataset/plans/configuration (nothing is overwritten)."""
    got = ckpt.get("init_args", {})
    diffs = [f"{k}: checkpoint has {got.get(k)!r}, this run {expected.get(k)!r}" for k in keys if got.get(k) != expected.get(k)]
    if diffs:
        raise CheckpointError(f"{path} belongs to a different training run ({'; '.join(diffs)}). "
                              f"Use another output folder or delete the checkpoint; it was left untouched.")


def epoch_durations(logging_state: dict) -> list[float]:
    """Seconds of each epoch in a checkpoint's logging state (training/logger.py): training and validation-loss
    batches, not the pauses of a resume."""
    return [e - s for s, e in zip(logging_state.get("epoch_start_timestamps", []),
                                  logging_state.get("epoch_end_timestamps", []))]
