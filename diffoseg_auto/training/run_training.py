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

from diffoseg_auto.errors import InvalidArgumentError, MissingFileError
from diffoseg_auto.paths import preprocessed_dataset_folder
from diffoseg_auto.plans.plans import load_plans
from diffoseg_auto.results_layout import CHECKPOINT_FINAL, CHECKPOINT_LATEST, fold_folder, trainer_folder
from diffoseg_auto.runtime.device import DEVICE_CHOICES, device_problem, resolve_device
from diffoseg_auto.runtime.precision import PRECISIONS
from diffoseg_auto.training import ddp
from diffoseg_auto.training.fold_guard import clear_fold_outputs, refuse_silent_overwrite
from diffoseg_auto.training.trainer import BUDGET_CLOCKS, DiffOSegTrainer
from diffoseg_auto.training.trainer_registry import get_trainer_class
from diffoseg_auto.utilities.argument_checks import above, at_least, raise_problems
from diffoseg_auto.utilities.command_runner import run_command
from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
from diffoseg_auto.utilities.run_lock import RunLock
from diffoseg_auto.utilities.temp_files import remove_stale_temp_files


def parse_fold(fold: int | str) -> int | str:
    s = str(fold)
    if s == "all":
        return "all"
    if s.isdigit():
        return int(s)
    raise InvalidArgumentError(f"Fold must be an integer (0, 1, ...) or 'all', got '{fold}'")


def check_arguments(num_epochs: int | None, iterations_per_epoch: int | None, val_iterations: int | None,
                    max_minutes: float | None, num_workers: int | None, device: str | None, continue_training: bool,
                    only_validation: bool, overwrite: bool) -> None:
    """Every argument problem at once, before any file is touched (a missing GPU included)."""
    raise_problems([
        at_least("--num_epochs", num_epochs, 1), at_least("--iterations_per_epoch", iterations_per_epoch, 1),
        at_least("--val_iterations", val_iterations, 0), above("--max_minutes", max_minutes, 0),
        at_least("--num_workers", num_workers, 0),
        device_problem(device),
        "--overwrite and --c exclude each other: continue the run or start it over." if overwrite and continue_training else None,
        "--overwrite and --val exclude each other: --val only validates the trained model." if overwrite and only_validation else None,
    ])


def _fold_guard(trainer_dir: Path, fold: int | str, stages: list[int], continue_training: bool, only_validation: bool,
                overwrite: bool):
    """Lock the fold folder (rank 0), refuse or clear earlier outputs, and remove leftover temporary files."""
    fold_dir = fold_folder(trainer_dir, fold)
    if ddp.rank() != 0:
        return contextlib.nullcontext()
    lock = RunLock(fold_dir, "diffoseg_train").acquire()
    try:
        remove_stale_temp_files(fold_dir)  # a kill during a checkpoint save leaves .tmp_* files (tens of MB)
        if overwrite:
            clear_fold_outputs(fold_dir, stages)
        elif not continue_training and not only_validation:
            refuse_silent_overwrite(fold_dir, stages)
    except BaseException:
        lock.release()
        raise
    return lock


def run_training(dataset: str | int, configuration: str, fold: int | str, stage: str | int = "both",
                 trainer: str = "DiffOSegTrainer", plans_identifier: str = "DiffOSegPlans",
                 continue_training: bool = False, only_validation: bool = False, num_epochs: int | None = None,
                 iterations_per_epoch: int | None = None, val_iterations: int | None = None, device: str | None = None,
                 seed: int = 12345, freeze_backbone: bool | None = None, num_workers: int | None = None,
                 output_folder: str | Path | None = None, skip_final_validation: bool = False,
                 max_minutes: float | None = None, overwrite: bool = False, precision: str | None = None,
                 compile_network: bool = False, budget_clock: str = "wall") -> list[DiffOSegTrainer]:
    """Train (or with ``only_validation`` just validate) the requested stage(s); returns the trainers.

    A stage that already has checkpoints needs ``continue_training`` or ``overwrite`` (see fold_guard).
    ``device`` None = CUDA when available, else the CPU; ``precision`` None = the plans' training.precision."""
    check_arguments(num_epochs, iterations_per_epoch, val_iterations, max_minutes, num_workers, device,
                    continue_training, only_validation, overwrite)
    dev = resolve_device(device)
    dataset_name = resolve_dataset_name(dataset)
    plans_file = preprocessed_dataset_folder(dataset_name) / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise MissingFileError(f"{plans_file}: plans file not found. Run `diffoseg_plan_and_preprocess -d {dataset}` "
                                f"first (or check -p {plans_identifier}).")
    plans = load_plans(plans_file)
    plans.get_configuration(configuration)  # unknown configuration -> error listing the available ones
    stages = {"both": [1, 2], "1": [1], "2": [2]}.get(str(stage))
    if stages is None:
        raise InvalidArgumentError(f"--stage must be 1, 2 or both, got '{stage}'")
    trainer_cls = get_trainer_class(trainer)
    if getattr(trainer_cls, "is_baseline", False):  # baselines have one stage (its folder is stage1)
        if stages == [2]:
            raise InvalidArgumentError(f"{trainer} has a single stage; train it with --stage 1 or both (the default).")
        stages = [1]
    fold = parse_fold(fold)
    if ddp.launched_by_torchrun():
        dev = ddp.init_from_env(dev.type)
    trainer_dir = (Path(output_folder) if output_folder is not None else
                   trainer_folder(dataset_name, trainer_cls.__name__, plans.plans_name, configuration))
    trainers = []
    guard = _fold_guard(trainer_dir, fold, stages, continue_training, only_validation, overwrite)
    try:
        for s in stages:
            tr = trainer_cls(plans, configuration, fold, dataset_name, s, dev, seed=seed, num_epochs=num_epochs,
                             iterations_per_epoch=iterations_per_epoch, output_folder=output_folder,
                             num_workers=num_workers, val_iterations=val_iterations, freeze_backbone=freeze_backbone,
                             max_minutes=max_minutes, precision=precision, compile_network=compile_network,
                             budget_clock=budget_clock)
            if only_validation:
                tr.load_checkpoint(tr.output_folder / CHECKPOINT_FINAL, weights_only=True)
            else:
                tr.run_training(continue_training=continue_training)
            if not skip_final_validation:
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
                   help="time budget per stage: the number of epochs is cut to what fits (equal-time benchmarks)")
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
                   help="augmentation worker processes (default min(2, CPUs); 0 = in-process, reproducible)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise_problems([at_least("-num_gpus", args.num_gpus, 1)])
    if args.num_gpus > 1 and not ddp.launched_by_torchrun():
        resolve_dataset_name(args.dataset)  # a missing dataset: one line here, not one per rank and torchrun's report
        raw = list(sys.argv[1:] if argv is None else argv)
        i = raw.index("-num_gpus")
        sys.exit(ddp.launch_torchrun(args.num_gpus, raw[:i] + raw[i + 2:]))
    run_training(args.dataset, args.configuration, args.fold, args.stage, args.tr, args.p, args.c, args.val,
                 args.num_epochs, args.iterations_per_epoch, args.val_iterations, args.device, args.seed,
                 True if args.freeze_backbone else None, args.num_workers,
                 skip_final_validation=args.no_final_validation, max_minutes=args.max_minutes,
                 overwrite=args.overwrite, precision=args.precision, compile_network=args.compile,
                 budget_clock=args.budget_clock)


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_train", main))
