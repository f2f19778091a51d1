"""Seconds per training iteration of a configuration on a device, measured with the real trainer.

The time-budget planner (planners/time_budget.py) needs the cost of an iteration BEFORE the candidate
configuration is preprocessed, so the batches here are synthetic arrays of the planned shapes: the network,
loss, optimiser, EMA and augmentation are the trainer's own, and their cost does not depend on what the
pixels show. Stage II is measured on fresh weights (its cost is that of its shapes, not of Stage I's values).
"""
from __future__ import annotations

import io
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from diffoseg_auto.plans.plans import Plans
from diffoseg_auto.training.augmentation import get_training_transforms, sampling_patch_size
from diffoseg_auto.training.trainer_registry import get_trainer_class
from diffoseg_auto.training.training_request import TrainingRequest


@dataclass
class StageThroughput:
    """Measured seconds of one stage's pieces (each the median of the timed repetitions)."""

    train_iteration_s: float      # forward + backward + step + EMA of one batch
    val_iteration_s: float        # one validation-loss batch (forward only)
    augmentation_s: float         # the training transforms of one batch (runs in workers when there are any)
    checkpoint_s: float           # serialising one checkpoint (written about every epoch: the best one)
    denoiser_row_s: float | None  # one no-grad denoiser evaluation of one window (prediction cost); None: baseline
    batch_size: int
    threads: int

    def to_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def synthetic_batch(plans: Plans, configuration: str, patch: list[int], batch_size: int, seed: int = 0) -> dict:
    """A batch with the loader's keys and shapes: data (B,C,*P) float32, seg (B,R,*P) uint8, rater_mask (B,R)."""
    rng = np.random.default_rng(seed)
    r, k = plans.num_raters, plans.num_classes
    return {"data": rng.standard_normal((batch_size, plans.num_input_channels, *patch)).astype(np.float32),
            "seg": rng.integers(0, k, (batch_size, r, *patch)).astype(np.uint8),
            "rater_mask": np.ones((batch_size, r), bool), "keys": [f"synthetic_{i}" for i in range(batch_size)]}


def _median_seconds(fn, repeats: int, warmup: int, reduce=np.median, clock=time.perf_counter) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return float(reduce(times))


SLOW_CALL_REPEATS = 3  # calls timed after a slow first one: their median survives one outlier


def steady_seconds(fn, seconds: float, clock=time.perf_counter) -> float:
    """Seconds of one call of ``fn`` once its one-off set-up (allocator, kernels; paid by the first call) is done:
    the median of the calls that fit ``seconds`` after the first. A first call slower than ``seconds`` gets exactly
    SLOW_CALL_REPEATS more (planning a large configuration must not take minutes per candidate). Taking the first
    call itself overestimated slow BU-BIL candidates by 40-60%, and one call after it still by 14% (a call's own
    spread on a shared machine is 3.5-4.6 s there; experiments notebook)."""
    first = _median_seconds(fn, 1, 0, clock=clock)
    repeats = SLOW_CALL_REPEATS if first > seconds else _repeats_for(seconds, first)
    return _median_seconds(fn, repeats, 0, clock=clock)


def _repeats_for(seconds: float, first_s: float) -> int:
    return int(max(2, min(50, seconds // max(first_s, 1e-4))))


def measure_stage(plans: Plans, configuration: str, stage: int, device: torch.device | str = "cpu",
                  trainer: str = "DiffOSegTrainer", seconds: float = 3.0) -> StageThroughput:
    """Time ``trainer``'s pieces of ``stage`` for about ``seconds`` each on ``device`` (its current torch threads)."""
    base = get_trainer_class(trainer)
    # Stage II without a Stage I checkpoint: same shapes, fresh weights (the cost is what is measured)
    cls = type(f"Measured{base.__name__}", (base,), {"_load_stage1": lambda self: None})
    with tempfile.TemporaryDirectory(prefix="diffoseg_throughput_") as tmp:
        request = TrainingRequest(plans.dataset_name, configuration, 0, trainer=trainer, num_workers=0, output_folder=tmp)
        tr = cls(plans, request, stage, torch.device(device))
        tr.initialize()
        tr.target_rng = np.random.RandomState(0)
        tr.torch_gen = torch.Generator().manual_seed(0)
        cfg = tr.cfg
        batch = synthetic_batch(plans, configuration, list(cfg.patch_size), tr.batch_size)
        tr.network.train()
        train_s = steady_seconds(lambda: tr.train_step(batch), seconds)
        tr.network.eval()
        val_s = steady_seconds(lambda: tr.validation_step(batch), seconds / 2)
        big = synthetic_batch(plans, configuration, sampling_patch_size(list(cfg.patch_size), cfg.augmentation,
                                                                        cfg.spatial_dims), tr.batch_size)
        transform = get_training_transforms(list(cfg.patch_size), cfg.augmentation, cfg.spatial_dims)
        aug_s = _median_seconds(lambda: transform(**{k: (v.copy() if isinstance(v, np.ndarray) else v)
                                                     for k, v in big.items()}), 3 if train_s > seconds else 10, 1, np.mean)  # random transforms: the mean cost
        ckpt_s = _median_seconds(lambda: torch.save(tr.checkpoint_dict(), io.BytesIO()), 2, 0)
        row_s = None
        if not getattr(base, "is_baseline", False):
            row_s = _denoiser_row_seconds(tr, batch, stage, seconds / 2)
    return StageThroughput(train_s, val_s, aug_s, ckpt_s, row_s, tr.batch_size, torch.get_num_threads())


@torch.no_grad()
def _denoiser_row_seconds(tr, batch: dict, stage: int, seconds: float) -> float:
    """No-grad denoise of a batch of rows with a cached encoding, per row (how prediction evaluates it)."""
    from diffoseg_auto.runtime.precision import autocast

    net = tr.network.eval()
    data = torch.from_numpy(batch["data"][:1]).to(tr.device)
    rows = int(batch["data"].shape[0])
    k = tr.plans.num_classes
    x_t = torch.nn.functional.one_hot(torch.zeros((rows, *data.shape[2:]), dtype=torch.long), k)
    x_t = x_t.movedim(-1, 1).float().to(tr.device)
    t = torch.full((rows,), tr.diffusion.num_timesteps // 2, dtype=torch.long, device=tr.device)
    rater = torch.zeros(rows, dtype=torch.long, device=tr.device) if stage == 2 else None
    from diffoseg_auto.network.denoiser_base import expand_cache

    with autocast(tr.device, tr.amp_dtype):
        cache = expand_cache(net.encode(data), rows)
        step = lambda: net.denoise(cache, x_t, t, rater)  # noqa: E731
        return steady_seconds(step, seconds) / rows
