"""What a training run may do with the outputs already in its fold folder.

Starting a stage over silently would replace its checkpoints while the other stage and the fold's
final checkpoint (``results_layout.fold_final_checkpoint``) stay from the old run, so the stages would
no longer match.
A stage with checkpoints therefore needs ``--c`` (continue) or ``--overwrite``; ``--overwrite``
deletes everything derived from the retrained stage: retraining Stage I clears both stages and the
fold's final copy (Stage II was started from Stage I), retraining only Stage II clears Stage II and the
fold's final copy. Other files in the fold folder stay.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from diffoseg_auto.errors import UserError
from diffoseg_auto.results_layout import CHECKPOINT_FINAL, CHECKPOINTS, stage_folder_of_fold


class FoldAlreadyTrainedError(UserError):
    """The stage to train has checkpoints and neither --c nor --overwrite was given."""


def _stage_dir(fold_dir: Path, stage: int) -> Path:
    return stage_folder_of_fold(fold_dir, stage)


def existing_checkpoints(fold_dir: Path, stage: int) -> list[str]:
    return [c for c in CHECKPOINTS if (_stage_dir(fold_dir, stage) / c).is_file()]


def refuse_silent_overwrite(fold_dir: str | Path, stages: Sequence[int]) -> None:
    """Raise when a stage to (re)train from scratch already has checkpoints."""
    fold_dir = Path(fold_dir)
    for s in stages:
        found = existing_checkpoints(fold_dir, s)
        if found:
            state = "finished" if CHECKPOINT_FINAL in found else "started (interrupted?)"
            raise FoldAlreadyTrainedError(
                f"{_stage_dir(fold_dir, s)}: stage {s} of {fold_dir.name} was already {state} ({', '.join(found)}). "
                f"Continue it with --c, or start over with --overwrite (deletes {fold_dir.name}'s outputs derived "
                f"from stage {s}).")


def clear_fold_outputs(fold_dir: str | Path, stages: Sequence[int]) -> list[Path]:
    """--overwrite: delete the outputs derived from the stages to retrain; returns what was deleted."""
    fold_dir = Path(fold_dir)
    derived = [_stage_dir(fold_dir, 2), fold_dir / CHECKPOINT_FINAL]
    if 1 in stages:
        derived.append(_stage_dir(fold_dir, 1))
    doomed = [p for p in derived if p.exists()]  # files the user put beside them stay
    for p in doomed:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return doomed
