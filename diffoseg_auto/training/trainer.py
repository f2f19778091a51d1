"""DiffOSeg trainer: nnU-Net-like hooks around small parts (data, augmentation, targets, diffusion,
network factory, EMA, checkpoints, logger).

One trainer object trains ONE stage of one fold. Stage I learns the probabilistic consensus, Stage II
starts from the Stage I fold checkpoint and learns per-rater prompts. It is built from the run's TrainingRequest
(training_request.py) and the stage's schedule (the plans' ``cfg.schedule(stage)`` with the request's overrides).
Reproducibility: every random
stream of an epoch (patch sampling, augmentation, targets, timesteps, forward noise) is seeded from
(seed, rank, epoch), so a run resumed at epoch e repeats epochs e.. exactly (in-process loading,
``num_workers=0``; background workers are fast but not bit-reproducible).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from diffoseg_auto.configuration import worker_processes
from diffoseg_auto.errors import MissingFileError, UserError
from diffoseg_auto.io.checkpoint_io import CheckpointError, check_compatible, load_checkpoint, save_checkpoint
from diffoseg_auto.network.factory import freeze_backbone, transfer_stage1_weights
from diffoseg_auto.paths import preprocessed_dataset_folder
from diffoseg_auto.plans.network_arguments import denoiser_from_plans, diffusion_from_plans
from diffoseg_auto.plans.plans import Plans
from diffoseg_auto.preprocessing.case_storage import list_preprocessed_cases, unpack_dataset
from diffoseg_auto.preprocessing.resume import assert_preprocessing_complete
from diffoseg_auto.results_layout import (CHECKPOINT_BEST, CHECKPOINT_FINAL, CHECKPOINT_LATEST, PROGRESS_FRACTIONS,
                                          checkpoint_path, fold_final_checkpoint, progress_checkpoint_name, stage_folder,
                                          trainer_folder, validation_folder)
from diffoseg_auto.runtime.compilation import maybe_compile
from diffoseg_auto.runtime.device import resolve_device
from diffoseg_auto.runtime.precision import autocast_dtype, grad_scaler, precision_name
from diffoseg_auto.training import ddp
from diffoseg_auto.training.augmentation import (get_training_transforms, get_validation_transforms,
                                                 make_augmenter, sampling_patch_size, seed_augmentation)
from diffoseg_auto.training.data_loader import DiffOSegDataLoader
from diffoseg_auto.training.diffusion_step import DiffusionLoss, optimizer_step
from diffoseg_auto.training.ema import EMA
from diffoseg_auto.training.finite_guard import raise_if_non_finite
from diffoseg_auto.training.logger import TrainingLogger
from diffoseg_auto.training.optim import build_optimizer, lr_at_progress, set_lr
from diffoseg_auto.training.rng_state import capture_rng_state, restore_rng_state
from diffoseg_auto.training.outputs import copy_plan_files
from diffoseg_auto.training.splits import get_or_create_splits, select_fold
from diffoseg_auto.training.stage_budget import BUDGET_CLOCKS, StageBudget, epochs_that_fit
from diffoseg_auto.training.training_request import TrainingRequest
from diffoseg_auto.training.validation import ValidationJob, validate_cases
from diffoseg_auto.utilities.file_ops import atomic_copy, load_json, save_json


class Stage1CheckpointMissingError(UserError, FileNotFoundError):
    pass


class DiffOSegTrainer:
    save_every = 5  # the latest checkpoint every N epochs (and at the end); resume repeats the epochs since

    def __init__(self, plans: Plans, request: TrainingRequest, stage: int = 1, device: torch.device | None = None):
        """``device``: this rank's device (run_training resolves it, DDP included); None = the request's."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        self.plans, self.request = plans, request
        self.configuration, self.fold, self.dataset_name = request.configuration, request.fold, request.dataset_name()
        self.cfg = plans.get_configuration(self.configuration)
        self.stage, self.seed = stage, int(request.seed)
        self.device = resolve_device(request.device) if device is None else torch.device(device)
        self.rank, self.world_size = ddp.rank(), ddp.world_size()
        self.is_main = self.rank == 0
        self.schedule = request.stage_schedule(self.cfg.schedule(stage), stage)
        self.initial_lr = self.schedule.initial_lr
        self.num_epochs = self.schedule.num_epochs
        self.iterations_per_epoch = self.schedule.iterations_per_epoch
        self.val_iterations = self.schedule.val_iterations
        self.freeze_backbone = self.schedule.freeze_backbone
        self.num_workers = (worker_processes(self.device.type, ranks=self.world_size) if request.num_workers is None
                            else int(request.num_workers))
        # time budget of this stage (training/stage_budget.py); None = train all epochs. The 'cpu' clock counts this
        # process's CPU time, so methods compared on a shared machine get equal compute.
        self.max_minutes = request.budget.max_minutes
        self.budget_clock = request.budget.clock
        self.batch_size = ddp.per_rank_batch_size(self.cfg.batch_size, self.world_size)
        self.trainer_dir = (request.output_folder if request.output_folder is not None else
                            trainer_folder(self.dataset_name, type(self).__name__, plans.plans_name, self.configuration))
        self.output_folder = stage_folder(self.trainer_dir, self.fold, stage)
        self.data_folder = preprocessed_dataset_folder(self.dataset_name) / self.cfg.data_identifier
        # network autocast dtype (None = float32); the plans' training.precision unless overridden (--precision)
        self.precision = request.precision or self.cfg.training.precision
        self.amp_dtype = autocast_dtype(self.precision, self.device)
        self.use_amp = self.amp_dtype is not None
        self.compile_network = bool(request.compile_network)
        self.diffusion = diffusion_from_plans(plans, self.configuration)
        self.diffusion_loss = DiffusionLoss(self.diffusion, plans.num_classes, stage, self.cfg.training, self.device,
                                            self.amp_dtype)
        self.logger = TrainingLogger()
        self.current_epoch = 0
        self.best_ema_val: float | None = None
        self.was_initialized = False
        self.network = self.ddp_network = self.optimizer = self.ema = self.grad_scaler = None
        # set by _build_loaders / _load_stage1 / on_epoch_start / run_training; None until then
        self.train_cases: list[str] | None = None
        self.val_cases: list[str] | None = None
        self.dl_tr = self.dl_val = self.mt_tr = self.mt_val = None
        self.stage1_not_transferred: list[str] | None = None  # Stage II parameters not taken from Stage I
        self.target_rng: np.random.RandomState | None = None
        self.torch_gen: torch.Generator | None = None
        self.iterations_done = 0  # training iterations of this stage (a budget may end an epoch early)
        self.budget: StageBudget | None = None  # set by run_training
        self._budget_spent_s = 0.0  # of the stage's budget, by the runs before this one (--c)
        self._epochs_at_start = 0

    # ------------------------------------------------------------------ identity / set-up
    @property
    def init_args(self) -> dict:
        return {"trainer_name": type(self).__name__, "plans_name": self.plans.plans_name,
                "configuration": self.configuration, "dataset_name": self.dataset_name, "stage": self.stage,
                "fold": self.fold, "num_raters": self.plans.num_raters, "num_classes": self.plans.num_classes}

    def initialize(self) -> None:
        if self.was_initialized:
            return
        torch.manual_seed(self.seed)  # identical initial weights on every rank
        self.network = self.build_network()
        self.network.to(self.device)
        self.ema = EMA(self.network, self.ema_decay())
        self.ddp_network = self.network
        if ddp.is_distributed():
            self.ddp_network = torch.nn.parallel.DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        # compiled for the training forward only; EMA, checkpoints and validation use the plain module
        self.ddp_network = maybe_compile(self.ddp_network, self.compile_network)
        self.optimizer = build_optimizer(self.network, self.cfg.training.optimizer, self.initial_lr,
                                         self.cfg.training.weight_decay)
        self.grad_scaler = grad_scaler(self.device, self.amp_dtype)
        self.was_initialized = True

    def build_network(self) -> torch.nn.Module:
        """The network of this stage (a hook: the baseline trainers build theirs here)."""
        network = denoiser_from_plans(self.plans, self.configuration, self.stage)
        if self.stage == 2:
            self.network = network
            self._load_stage1()
            if self.freeze_backbone:
                freeze_backbone(network)
        return network

    def ema_decay(self) -> float:
        """The plans' decay, shortened so the EMA spans at most ~10% of this stage's iterations.

        0.999 averages over ~1000 steps: right for the planned 25,000, but in a short run (a CPU
        budget, --num_epochs) it would still carry the early, barely trained weights."""
        total = max(1, self.num_epochs * self.iterations_per_epoch)
        return min(self.cfg.training.ema_decay, max(0.0, 1.0 - 10.0 / total))

    def stage1_checkpoint_path(self) -> Path:
        return checkpoint_path(self.trainer_dir, self.fold, 1)

    def _load_stage1(self) -> None:
        path = self.stage1_checkpoint_path()
        if not path.is_file():
            raise Stage1CheckpointMissingError(
                f"{path}: Stage I checkpoint not found. Run stage 1 first "
                f"(diffoseg_train {self.dataset_name} {self.configuration} {self.fold} --stage 1), or use --stage both.")
        ckpt = load_checkpoint(path)
        check_compatible(ckpt, self.init_args, path)
        self.stage1_not_transferred = transfer_stage1_weights(self.network, ckpt["network_weights"])

    def _build_loaders(self) -> None:
        cases = list_preprocessed_cases(self.data_folder)
        if not cases:
            raise MissingFileError(f"{self.data_folder}: no preprocessed cases. Run diffoseg_plan_and_preprocess "
                                    f"for configuration '{self.configuration}' first.")
        pp = preprocessed_dataset_folder(self.dataset_name)
        # before splits_final.json is written: folds built from a partial folder would be kept for good
        assert_preprocessing_complete(self.data_folder, pp, self.dataset_name, self.configuration)
        if self.is_main:
            groups = load_json(pp / "dataset.json").get("case_groups") if (pp / "dataset.json").is_file() else None
            get_or_create_splits(pp, cases, groups, seed=self.seed)
            unpack_dataset(self.data_folder)
        ddp.wait_for_rank0()  # rank 0 worked alone (unpacking / checkpoints): no collective timeout
        self.train_cases, self.val_cases = select_fold(get_or_create_splits(pp, cases, None), self.fold, cases,
                                                       str(pp / "splits_final.json"))
        aug, patch = self.cfg.augmentation, list(self.cfg.patch_size)
        sd = self.cfg.spatial_dims
        fg = self.cfg.training.oversample_foreground_percent
        self.dl_tr = DiffOSegDataLoader(self.data_folder, self.train_cases, self.batch_size,
                                        sampling_patch_size(patch, aug, sd), fg, self.cfg.slice_axis, self.seed, self.rank)
        self.dl_val = DiffOSegDataLoader(self.data_folder, self.val_cases, self.batch_size, patch, fg,
                                         self.cfg.slice_axis, self.seed + 1, self.rank)
        small = len(self.train_cases) < 2 * max(self.num_workers, 1)
        workers = 0 if small else self.num_workers
        self.mt_tr = make_augmenter(self.dl_tr, get_training_transforms(patch, aug, sd), workers, self.seed + 100 * self.rank)
        self.mt_val = make_augmenter(self.dl_val, get_validation_transforms(), max(0, workers // 2), self.seed + 7)

    # ------------------------------------------------------------------ hooks
    def on_train_start(self) -> None:
        self.initialize()
        if self.request.continue_training:
            self.load_resume_checkpoint()
        self._build_loaders()
        if self.is_main:
            self.output_folder.mkdir(parents=True, exist_ok=True)
            copy_plan_files(self.plans, self.dataset_name, self.trainer_dir)
            self.logger.open(self.output_folder)
            save_json(self.debug_info(), self.output_folder / "debug.json")
            self.print(f"stage {self.stage}, fold {self.fold}: {len(self.train_cases)} training / {len(self.val_cases)} "
                       f"validation cases, {self.num_epochs} epochs x {self.iterations_per_epoch} iterations, "
                       f"batch {self.batch_size} x {self.world_size} rank(s), device {self.device}")

    def on_epoch_start(self) -> None:
        e = self.current_epoch
        self.network.train()
        self._set_lr(min(e, self.num_epochs) / self.num_epochs)
        self.dl_tr.set_epoch(e)
        self.dl_val.set_epoch(e)
        seed_augmentation([self.seed % 2**32, self.rank, e])
        self.target_rng = np.random.RandomState([self.seed % 2**32, self.rank, e, 1])
        self.torch_gen = torch.Generator().manual_seed(int(np.random.RandomState([self.seed % 2**32, self.rank, e, 2])
                                                            .randint(0, 2**31 - 1)))
        self.logger.log("epoch_start_timestamps", time.time(), e)
        self.logger.log("lrs", self.optimizer.param_groups[0]["lr"], e)

    def _loss(self, batch: dict, network) -> torch.Tensor:
        return self.diffusion_loss(network, batch, self.target_rng, self.torch_gen)

    def train_step(self, batch: dict) -> float:
        loss = self._loss(batch, self.ddp_network)
        value = optimizer_step(loss, self.optimizer, self.grad_scaler, self.cfg.training.grad_clip, self._check_finite)
        self.ema.update(self.network)
        return value

    def _check_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor, scaler_enabled: bool) -> None:
        raise_if_non_finite(loss, grad_norm, scaler_enabled, self.current_epoch, self.stage, self.fold,
                            self.output_folder)

    def _set_lr(self, progress: float) -> None:
        set_lr(self.optimizer, lr_at_progress(self.initial_lr, progress, self.cfg.training.lr_schedule,
                                              self.cfg.training.poly_exponent))

    @torch.no_grad()
    def validation_step(self, batch: dict) -> float:
        """Loss of the raw network (EMA lags far behind early in training) on an un-augmented val patch."""
        return float(self._loss(batch, self.network).cpu())

    def on_epoch_end(self, train_losses: list[float], val_losses: list[float]) -> None:
        e = self.current_epoch
        self.logger.log("train_losses", ddp.mean_over_ranks(np.mean(train_losses), self.device), e)
        self.logger.log("val_losses", ddp.mean_over_ranks(np.mean(val_losses) if val_losses else np.nan, self.device), e)
        self.logger.log("epoch_end_timestamps", time.time(), e)
        self.current_epoch = e + 1
        if self.is_main:
            self.print(self.logger.epoch_line(e, self.num_epochs))
            ema_val = self.logger.values["ema_val_losses"][e]
            if not np.isfinite(ema_val):  # no validation batches (val_iterations 0): best = latest
                self.save_checkpoint(self.output_folder / CHECKPOINT_BEST)
            elif self.best_ema_val is None or ema_val < self.best_ema_val:
                self.best_ema_val = ema_val
                self.save_checkpoint(self.output_folder / CHECKPOINT_BEST)
            if self.current_epoch % self.save_every == 0 or self.current_epoch == self.num_epochs:
                self.save_checkpoint(self.output_folder / CHECKPOINT_LATEST)
            for f in PROGRESS_FRACTIONS[:-1]:  # learning-curve points (a budget run may move them as it re-plans)
                if self.current_epoch == max(1, round(f * self.num_epochs)):
                    self.save_checkpoint(self.output_folder / progress_checkpoint_name(self.stage, f))
            self.logger.plot(self.output_folder / "progress.png")

    def on_train_end(self) -> None:
        if self.is_main:
            final = self.output_folder / CHECKPOINT_FINAL
            self.save_checkpoint(final)
            self.save_checkpoint(self.output_folder / CHECKPOINT_LATEST)
            atomic_copy(final, self.output_folder / progress_checkpoint_name(self.stage, PROGRESS_FRACTIONS[-1]))
            self.copy_final_to_fold()
        # batchgenerators has no public shutdown: dropping the last reference runs the augmenter's
        # destructor, which stops its worker processes
        self.mt_tr = self.mt_val = None
        ddp.wait_for_rank0()  # rank 0 worked alone (unpacking / checkpoints): no collective timeout

    def copy_final_to_fold(self) -> None:
        """The fold's own final model (results_layout.fold_final_checkpoint): Stage II's final when Stage II ran, else Stage I's."""
        if self.stage == 1 and checkpoint_path(self.trainer_dir, self.fold, 2).is_file():
            return
        atomic_copy(self.output_folder / CHECKPOINT_FINAL, fold_final_checkpoint(self.trainer_dir, self.fold))

    # ------------------------------------------------------------------ loop
    def run_training(self) -> None:
        """Train the stage (continued from its latest checkpoint with the request's --c)."""
        self.on_train_start()
        self.budget = StageBudget(self.max_minutes, BUDGET_CLOCKS[self.budget_clock], self._budget_spent_s)
        self._epochs_at_start = self.current_epoch
        if self.budget.limited and self._budget_spent_s > 0:  # --c: what the earlier runs spent is gone (all: done)
            self._fit_epochs_to_budget()
        while self.current_epoch < self.num_epochs:
            self.on_epoch_start()
            train_losses = self.train_epoch()
            self.network.eval()
            # an epoch the budget cut short validates on its share of the batches
            n_val = math.ceil(self.val_iterations * len(train_losses) / self.iterations_per_epoch)
            val_losses = [self.validation_step(next(self.mt_val)) for _ in range(n_val)]
            if len(train_losses) < self.iterations_per_epoch:
                self.num_epochs = self.current_epoch + 1  # the budget ended inside this epoch: the stage ends with it
            self.on_epoch_end(train_losses, val_losses)
            if self.budget.limited and self.current_epoch < self.num_epochs:
                self._fit_epochs_to_budget()
        self.on_train_end()

    def train_epoch(self) -> list[float]:
        """The epoch's training iterations. Under a time budget the clock is read (rank 0's, so every rank agrees)
        before each one: the epoch ends when the budget is spent (after at least one iteration), and the learning
        rate follows the spent share of the budget or the share of the planned iterations done, whichever is further."""
        losses = []
        planned = self.schedule.num_epochs * self.iterations_per_epoch
        for it in range(self.iterations_per_epoch):
            if self.budget.limited:
                spent = ddp.broadcast_float(self.budget.spent_s(), self.device)
                if it > 0 and spent >= self.budget.seconds:
                    break
                self._set_lr(max(self.iterations_done / planned, self.budget.fraction(spent)))
                if it == 0:
                    self.logger.log("lrs", self.optimizer.param_groups[0]["lr"], self.current_epoch)
            losses.append(self.train_step(next(self.mt_tr)))
            self.iterations_done += 1
        return losses

    def _fit_epochs_to_budget(self) -> None:
        """Re-estimate the epochs the budget reaches (the epoch lines, the learning-curve checkpoints and the end of
        the loop follow num_epochs; the clock itself stops the last epoch)."""
        spent = ddp.broadcast_float(self.budget.spent_s(), self.device)
        fits = epochs_that_fit(self.budget, spent, self.current_epoch, self.current_epoch - self._epochs_at_start,
                               self.schedule.num_epochs)
        if fits != self.num_epochs:
            self.num_epochs = fits
            self.print(f"time budget {self.max_minutes:g} min: training ends with epoch {fits}")

    def perform_actual_validation(self) -> dict | None:
        """Sample every validation case with the EMA weights; write validation/summary.json (rank 0 only)."""
        if not self.is_main:
            return None
        if self.val_cases is None:  # --val: no training ran in this process
            cases = list_preprocessed_cases(self.data_folder)
            pp = preprocessed_dataset_folder(self.dataset_name)
            _, self.val_cases = select_fold(get_or_create_splits(pp, cases, None), self.fold, cases)
        summary = self.validate_val_cases()
        if self.logger.values["train_losses"]:  # --val on a finished run re-plots with the metrics
            self.logger.plot(self.output_folder / "progress.png", final_metrics=summary.get("metrics"))
        return summary

    def validate_val_cases(self) -> dict:
        """Predict and score ``self.val_cases`` into validation/ (a hook: the baselines predict without sampling)."""
        return validate_cases(self.ema.model, self.diffusion, self.plans, self.cfg, self.stage, self.device,
                              self.validation_job())

    def validation_job(self) -> ValidationJob:
        return ValidationJob(self.data_folder, list(self.val_cases),
                             validation_folder(self.trainer_dir, self.fold, self.stage), self._raw_file_ending())

    def _raw_file_ending(self) -> str | None:
        """The raw images' file ending (dataset.json copy in the preprocessed folder), for exporting predictions."""
        dj = preprocessed_dataset_folder(self.dataset_name) / "dataset.json"
        return load_json(dj).get("file_ending") if dj.is_file() else None

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_dict(self) -> dict:
        return {"network_weights": self.ema.state_dict(), "raw_network_weights": self.network.state_dict(),
                "optimizer_state": self.optimizer.state_dict(), "grad_scaler_state": self.grad_scaler.state_dict(),
                "epoch": self.current_epoch, "iterations": self.iterations_done, "budget_spent_s": self._budget_spent(),
                "ema_num_updates": self.ema.num_updates, "logging": {**self.logger.state(), "best_ema_val": self.best_ema_val},
                "rng_state": capture_rng_state({"data_loader": self.dl_tr.get_rng_state() if self.dl_tr is not None else None}),
                "init_args": self.init_args, "trainer_name": type(self).__name__, "plans": self.plans.to_dict()}

    def _budget_spent(self) -> float:
        """Seconds of the stage's time budget spent (kept in the checkpoints, so --c goes on with the rest)."""
        return self.budget.spent_s() if self.budget is not None and self.budget.limited else self._budget_spent_s

    def save_checkpoint(self, path: Path) -> None:
        if self.is_main:
            save_checkpoint(path, self.checkpoint_dict())

    def load_checkpoint(self, path: str | Path, weights_only: bool = False, ckpt: dict | None = None) -> dict:
        """Restore from ``path`` (``ckpt``: its already loaded contents, to avoid reading it twice)."""
        self.initialize()
        ckpt = load_checkpoint(path) if ckpt is None else ckpt
        check_compatible(ckpt, self.init_args, path, keys=("trainer_name", "plans_name", "configuration", "dataset_name",
                                                            "stage", "fold", "num_raters", "num_classes"))
        self.network.load_state_dict(ckpt["raw_network_weights"])
        self.ema.load_state_dict(ckpt["network_weights"])
        self.ema.num_updates = int(ckpt.get("ema_num_updates", int(ckpt["epoch"]) * self.iterations_per_epoch))
        if not weights_only:
            self.optimizer.load_state_dict(ckpt["optimizer_state"])
            if ckpt.get("grad_scaler_state"):
                self.grad_scaler.load_state_dict(ckpt["grad_scaler_state"])
            self.current_epoch = int(ckpt["epoch"])
            self.iterations_done = int(ckpt.get("iterations", self.current_epoch * self.iterations_per_epoch))
            self._budget_spent_s = float(ckpt.get("budget_spent_s", 0.0))
            self.logger.load_state(ckpt["logging"], self.current_epoch)
            self.best_ema_val = ckpt["logging"].get("best_ema_val")
            if ckpt.get("rng_state"):  # the epoch streams are reseeded per epoch; this restores the global ones
                restore_rng_state(ckpt["rng_state"])
        return ckpt

    def load_resume_checkpoint(self) -> None:
        """--c: the most advanced of the latest / final checkpoints; none -> start fresh (with a note)."""
        found = [p for p in (self.output_folder / CHECKPOINT_LATEST, self.output_folder / CHECKPOINT_FINAL)
                 if p.is_file()]
        if not found:
            self.print(f"--c: no checkpoint in {self.output_folder}, starting a new training")
            return
        loaded = {p: load_checkpoint(p) for p in found}
        best = max(found, key=lambda p: loaded[p]["epoch"])
        self.load_checkpoint(best, ckpt=loaded[best])
        self.print(f"continuing from {best.name} at epoch {self.current_epoch}")

    # ------------------------------------------------------------------ misc
    def print(self, *args) -> None:
        if self.is_main:
            self.logger.print(*args)

    def debug_info(self) -> dict:
        return {**self.init_args, "seed": self.seed, "device": str(self.device), "world_size": self.world_size,
                "batch_size_per_rank": self.batch_size, "num_epochs": self.num_epochs,
                "iterations_per_epoch": self.iterations_per_epoch, "val_iterations": self.val_iterations,
                "initial_lr": self.initial_lr, "max_minutes": self.max_minutes, "budget_clock": self.budget_clock, "freeze_backbone": self.freeze_backbone, "num_workers": self.num_workers,
                "use_amp": self.use_amp, "precision": precision_name(self.amp_dtype), "compile": self.compile_network, "save_every": self.save_every, "output_folder": str(self.output_folder),
                "data_folder": str(self.data_folder), "configuration_plan": self.plans.to_dict()["configurations"][self.configuration],
                "torch_version": torch.__version__, "network_class": type(self.network).__name__ if self.network else None}


__all__ = ["DiffOSegTrainer", "CheckpointError", "Stage1CheckpointMissingError"]
