"""The schedule of a time-budget plan: what one stage of diffoseg_train costs per piece, the epochs x iterations that
fit its seconds, the rule that picks a candidate, the estimate of an unmeasured candidate and of the measuring
itself. documentation/planning.md, "Time budget"."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from diffoseg_auto.results_layout import PROGRESS_FRACTIONS
from planners.budget_candidates import CandidateWork

# The rule's floor, chosen on the tuning folds (planning.md, "Time budget"; results.md section 1): on LIDC fold 0 the
# full-width network won at 210 and 546 Stage I iterations over widths / 2 and / 4 with 2 to 4x more; on BU-BIL fold 0
# spacing x4 (60 iterations) had a lower GED than x8 (320). Capacity and resolution first, down to this many.
MIN_STAGE1_ITERATIONS = 50
MIN_EPOCHS = 40              # enough epochs for the poly learning rate and the learning-curve checkpoints
MIN_ITERATIONS_PER_EPOCH = 10
STAGE_START_SECONDS = 10.0   # building the loaders, unpacking, the first batches
EPOCH_PLOT_SECONDS = 0.3     # progress.png every epoch
# checkpoints the trainer writes once per stage: final and latest at the end, one per learning-curve point
END_CHECKPOINT_WRITES = 2 + len(PROGRESS_FRACTIONS)
MEASURE_SETUP_SECONDS = 2.0  # building one stage's trainer and network before its pieces are timed


@dataclass(frozen=True)
class StageCost:
    """Seconds per piece of one stage (as diffoseg_auto.training.throughput.StageThroughput measures them)."""

    train_iteration_s: float
    val_iteration_s: float
    augmentation_s: float = 0.0
    checkpoint_s: float = 0.0
    denoiser_row_s: float | None = None

    @classmethod
    def from_mapping(cls, m: Mapping) -> "StageCost":
        return cls(**{k: m[k] for k in cls.__dataclass_fields__ if k in m})


def iteration_seconds(cost: StageCost, num_workers: int) -> float:
    """One training iteration: augmentation runs in the trainer's process without workers, beside it with them."""
    if num_workers <= 0:
        return cost.train_iteration_s + cost.augmentation_s
    return max(cost.train_iteration_s, cost.augmentation_s / num_workers)


def checkpoints_per_epoch() -> float:
    """The best checkpoint (at most every epoch) and the latest every ``save_every`` epochs."""
    from diffoseg_auto.training.trainer import DiffOSegTrainer

    return 1.0 + 1.0 / DiffOSegTrainer.save_every


def stage_schedule(cost: StageCost, seconds: float, planned_iterations: int, planned_ipe: int, val_ratio: float,
                   num_workers: int) -> dict:
    """Epochs x iterations of one stage's training loop that fit ``seconds`` with its start-up, per-epoch
    validation loss, checkpoints and plot, and its end-of-stage checkpoints (never more than the planned
    iterations; the end-of-stage validation sampling is counted by the caller)."""
    it = iteration_seconds(cost, num_workers)
    per_epoch_writes = checkpoints_per_epoch()
    fixed = STAGE_START_SECONDS + END_CHECKPOINT_WRITES * cost.checkpoint_s

    def per_iteration(ipe: int) -> float:  # an iteration's share of the per-epoch validation, checkpoints and plot
        val = max(1, round(ipe * val_ratio))
        return it + (val * cost.val_iteration_s + per_epoch_writes * cost.checkpoint_s + EPOCH_PLOT_SECONDS) / ipe

    usable = max(0.0, seconds - fixed)
    ipe = planned_ipe
    total = min(planned_iterations, int(usable // per_iteration(ipe)))
    if total < MIN_EPOCHS * ipe:
        ipe = max(MIN_ITERATIONS_PER_EPOCH, total // MIN_EPOCHS)
        total = min(planned_iterations, int(usable // per_iteration(ipe)))
    epochs = max(1, total // ipe)
    # fewer epochs than planned: spread the remainder over them, so that rounding to whole epochs does not leave up
    # to an epoch of the budget unused (at 0.1 h a 10-iteration epoch of a slow candidate is ~10% of a stage)
    wider = min(planned_iterations, total) // epochs
    if wider > ipe and fixed + epochs * wider * per_iteration(wider) <= max(seconds, 0.0):
        ipe = wider
    val = max(1, round(ipe * val_ratio))
    return {"num_epochs": int(epochs), "iterations_per_epoch": int(ipe), "num_val_iterations_per_epoch": int(val),
            "iterations": int(epochs * ipe),
            "estimated_seconds": round(fixed + epochs * ipe * per_iteration(ipe), 1)}


def choose_candidate(rows: list[dict], min_stage1_iterations: int) -> dict:
    """The rule: the most expensive candidate (per Stage I iteration) reaching ``min_stage1_iterations``; else the
    one with the most Stage I iterations. Ties: finer spacing, then wider."""
    order = sorted(rows, key=lambda r: (-r["stage1_seconds_per_iteration"], r["spacing_factor"], r["feature_divisor"]))
    for r in order:
        if r["stage1"]["iterations"] >= min_stage1_iterations:
            return r
    return max(order, key=lambda r: (r["stage1"]["iterations"], -r["spacing_factor"], -r["feature_divisor"]))


def scaled_cost(measured: StageCost, measured_work: CandidateWork, work: CandidateWork, factor: float = 1.0) -> StageCost:
    """The cost of a candidate of ``work`` estimated from one measured candidate (the cost model): training,
    validation and denoiser rows scale with the convolutions, augmentation with the voxels, a checkpoint with the
    weights; ``factor`` multiplies every piece (the optimistic estimate that decides a drop)."""
    conv = work.macs / measured_work.macs * factor
    per_row = conv * measured_work.batch / work.batch  # a denoiser row is one sample of one window
    row = None if measured.denoiser_row_s is None else measured.denoiser_row_s * per_row
    return StageCost(measured.train_iteration_s * conv, measured.val_iteration_s * conv,
                     measured.augmentation_s * work.voxels / measured_work.voxels * factor,
                     measured.checkpoint_s * work.parameters / measured_work.parameters * factor, row)


def _steady_seconds(call_s: float, seconds: float) -> float:
    """Seconds that throughput.steady_seconds spends on a call of ``call_s`` given ``seconds``: the first call, then
    SLOW_CALL_REPEATS more when it is slower than ``seconds``, else the calls that fit ``seconds`` (at least 2)."""
    from diffoseg_auto.training.throughput import SLOW_CALL_REPEATS

    if call_s > seconds:
        return call_s * (1 + SLOW_CALL_REPEATS)
    return call_s + max(seconds, 2 * call_s)


def measuring_seconds(costs: tuple[StageCost, ...], seconds: float, batch_size: int) -> float:
    """Seconds that measuring one candidate's stages takes (training.throughput.measure_stage: training and
    validation batches, up to 11 augmentations, 2 checkpoints, a batch of denoiser rows; the model of its loop)."""
    total = 0.0
    for c in costs:
        total += (MEASURE_SETUP_SECONDS + _steady_seconds(c.train_iteration_s, seconds)
                  + _steady_seconds(c.val_iteration_s, seconds / 2) + 11 * c.augmentation_s + 2 * c.checkpoint_s)
        if c.denoiser_row_s is not None:
            total += _steady_seconds(c.denoiser_row_s * batch_size, seconds / 2)
    return total

