"""`diffoseg_train DATASET CONFIG FOLD`: train Stage I, Stage II or both for one fold.

    diffoseg_train 1 2d 0                       # both stages, fold 0
    diffoseg_train 1 2d 0 --stage 2 --c         # continue Stage II from its latest checkpoint
    diffoseg_train 1 2d all --val               # only the final validation of the finished stages
    diffoseg_train 1 3d_fullres 0 -num_gpus 2   # DDP on 2 GPUs (re-launches itself with torchrun)
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from diffoseg_auto.errors import MissingFileError
from diffoseg_auto.paths import preprocessed_dataset_folder
from diffoseg_auto.plans.plans import load_plans
from diffoseg_auto.results_layout import CHECKPOINT_FINAL, CHECKPOINT_LATEST, fold_folder, trainer_folder
from diffoseg_auto.runtime.device import DEVICE_CHOICES, resolve_device
from diffoseg_auto.runtime.precision import PRECISIONS
from diffoseg_auto.training import ddp
from diffoseg_auto.training.fold_guard import clear_fold_outputs, refuse_silent_overwrite
from diffoseg_auto.training.stage_budget import BUDGET_CLOCKS
from diffoseg_auto.training.trainer import DiffOSegTrainer
from diffoseg_auto.training.training_request import ScheduleOverrides, TimeBudget, TrainingRequest
from diffoseg_auto.utilities.argument_checks import at_least, raise_problems
from diffoseg_auto.utilities.command_runner import run_command
from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
from diffoseg_auto.utilities.run_lock import RunLock
from diffoseg_auto.utilities.temp_files import remove_stale_temp_files


def _fold_guard(trainer_dir: Path, request: TrainingRequest, stages: tuple[int, ...]):
    """Lock the fold folder (rank 0), refuse or clear earlier outputs, and remove leftover temporary files."""
    fold_dir = fold_folder(trainer_dir, request.fold)
    if ddp.rank() != 0:
        return contextlib.nullcontext()
    lock = RunLock(fold_dir, "diffoseg_train").acquire()
    try:
        remove_stale_temp_files(fold_dir)  # a kill during a checkpoint save leaves .tmp_* files (tens of MB)
        if request.overwrite:
            clear_fold_outputs(fold_dir, list(stages))
        elif not request.continue_training and not request.only_validation:
            refuse_silent_overwrite(fold_dir, list(stages))
    except BaseException:
        lock.release()
        raise
    return lock


def run_training(request: TrainingRequest) -> list[DiffOSegTrainer]:
    """Train (or with ``only_validation`` just validate) the requested stage(s); returns the stages' trainers.

    Every argument problem is reported at once before any file is touched (TrainingRequest.validate); a stage that
    already has checkpoints needs ``continue_training`` or ``overwrite`` (see fold_guard)."""
    request.validate()
    dev = resolve_device(request.device)
    dataset_name = request.dataset_name()
    plans_file = preprocessed_dataset_folder(dataset_name) / f"{request.plans}.json"
    if not plans_file.is_file():
        raise MissingFileError(f"{plans_file}: plans file not found. Run `diffoseg_plan_and_preprocess -d "
                               f"{request.dataset}` first (or check -p {request.plans}).")
    plans = load_plans(plans_file)
    plans.get_configuration(request.configuration)  # unknown configuration -> error listing the available ones
    trainer_cls, stages = request.trainer_class(), request.stages()
    if ddp.launched_by_torchrun():
        dev = ddp.init_from_env(dev.type)
    trainer_dir = (request.output_folder if request.output_folder is not None else
                   trainer_folder(dataset_name, trainer_cls.__name__, plans.plans_name, request.configuration))
    trainers = []
    guard = _fold_guard(trainer_dir, request, stages)
    try:
        for stage in stages:
            tr = trainer_cls(plans, request, stage, dev)
            if request.only_validation:
                tr.load_checkpoint(tr.output_folder / CHECKPOINT_FINAL, weights_only=True)
            else:
                tr.run_training()
            if request.final_validation:
                tr.perform_actual_validation()  # rank 0 only
            ddp.wait_for_rank0()
            trainers.append(tr)
    finally:
        guard.__exit__(None, None, None)
        if ddp.launched_by_torchrun():
            ddp.cleanup()
    return trainers


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train DiffOSeg (Stage I consensus, Stage II per-rater prompts) on one fold.")
    p.add_argument("dataset", help="dataset id (e.g. 1) or name (Dataset001_Toy)")
    p.add_argument("configuration", help="configuration in the plans, e.g. 2d or 3d_fullres")
    p.add_argument("fold", help="fold of splits_final.json (0..4) or 'all'")
    p.add_argument("--stage", default="both", choices=["1", "2", "both"], help="which stage(s) to train (default both)")
    p.add_argument("-tr", default="DiffOSegTrainer", help="trainer: DiffOSegTrainer (default), a baseline (ConsensusUNetTrainer, MultiHeadUNetTrainer, "
                        "ProbUNetTrainer) or a dotted path to a subclass")
    p.add_argument("-p", default="DiffOSegPlans", help="plans identifier (default DiffOSegPlans)")
    p.add_argument("--c", action="store_true", help=f"continue from {CHECKPOINT_LATEST}")
    p.add_argument("--overwrite", action="store_true",
                   help="start over a stage that has checkpoints: deletes the fold's outputs derived from it")
    p.add_argument("--val", action="store_true", help=f"only run the final validation from {CHECKPOINT_FINAL}")
    p.add_argument("--num_epochs", type=int, default=None, help="override the plans' number of epochs")
    p.add_argument("--iterations_per_epoch", type=int, default=None, help="override the plans' iterations per epoch")
    p.add_argument("--val_iterations", type=int, default=None, help="override the validation-loss batches per epoch")
    p.add_argument("--max_minutes", type=float, default=None,
                   help="time budget per stage, read every iteration: the stage stops when it is spent and the "
                        "learning rate decays over it (across --c runs; equal-time benchmarks)")
    p.add_argument("--budget_clock", default="wall", choices=sorted(BUDGET_CLOCKS),
                   help="what --max_minutes counts: wall-clock time (default) or this process's CPU time "
                        "(equal compute for methods compared on a shared machine)")
    p.add_argument("-device", default=None,
                   help=f"{', '.join(DEVICE_CHOICES)} or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="network autocast (default: the plans' training.precision, 'auto' = bf16 where native, "
                        "fp16 + GradScaler on GPUs without bf16, else fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward (slow start; GPUs)")
    p.add_argument("--seed", type=int, default=12345, help="random seed (data order, init, noise)")
    p.add_argument("--no_final_validation", action="store_true",
                   help="skip the end-of-stage validation (sampling every validation case); --val runs it later")
    p.add_argument("--freeze_backbone", action="store_true", help="Stage II: train only the prompt block and rater input")
    p.add_argument("-num_gpus", type=int, default=1, help="DDP: number of GPUs (re-launches with torchrun)")
    p.add_argument("--num_workers", type=int, default=None,
                   help="augmentation worker processes (default: on a CUDA device min(cores - 1, 12, memory / 3 GB), "
                        "else min(2, CPUs); 0 = in-process, reproducible)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise_problems([at_least("-num_gpus", args.num_gpus, 1)])
    if args.num_gpus > 1 and not ddp.launched_by_torchrun():
        resolve_dataset_name(args.dataset)  # a missing dataset: one line here, not one per rank and torchrun's report
        raw = list(sys.argv[1:] if argv is None else argv)
        i = raw.index("-num_gpus")
        sys.exit(ddp.launch_torchrun(args.num_gpus, raw[:i] + raw[i + 2:]))
    run_training(request_from_args(args))


def request_from_args(args: argparse.Namespace) -> TrainingRequest:
    """The training request of diffoseg_train's command line (build_parser)."""
    schedule = ScheduleOverrides(args.num_epochs, args.iterations_per_epoch, args.val_iterations,
                                 True if args.freeze_backbone else None)
    return TrainingRequest(args.dataset, args.configuration, args.fold, stage=args.stage, trainer=args.tr, plans=args.p,
                           schedule=schedule, budget=TimeBudget(args.max_minutes, args.budget_clock),
                           device=args.device, precision=args.precision, compile_network=args.compile,
                           num_workers=args.num_workers, seed=args.seed, continue_training=args.c,
                           only_validation=args.val, overwrite=args.overwrite,
                           final_validation=not args.no_final_validation)

if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_train", main))
