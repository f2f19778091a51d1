"""real_data.py compare: DiffOSeg and the baselines at the same CPU budget (or a time-budget configuration) per
method and fold, with the trivial and inter-rater rows; the CPU-sized configurations and the data preparation."""
from __future__ import annotations

import argparse
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.lib.bench_lib import PLANS, plan_budget_configuration, set_env, train_with_budget
from benchmarks.quality.real_data_records import REFERENCE_METHODS, record_curve, record_fold, recorded_methods

if TYPE_CHECKING:  # pandas loads numpy: real_data.py sets one thread first
    import pandas as pd


ROOT = Path(__file__).resolve().parents[2]
LIDC = ROOT.parent / "shared" / "data" / "lidc_subset" / "lidc_subset.npz"
BUBIL = ROOT.parent / "shared" / "data" / "bubil_cells" / "BU-BIL_Dataset1"
DEFAULT_TRAINERS = ["DiffOSegTrainer", "ConsensusUNetTrainer", "MultiHeadUNetTrainer", "ProbUNetTrainer"]
TRAINER = "DiffOSegTrainer"


# ---------------------------------------------------------------- data: conversion and CPU-sized configurations

@dataclass(frozen=True)
class CpuConfiguration:
    """A configuration inheriting the planned '2d' that only makes an iteration cheap on a CPU: a coarser spacing
    (``factor`` times the planned one), a smaller patch, fewer stages, or fewer features per stage
    (``feature_divisor``: the planned widths divided, at least 8). One at the planned spacing and patch keeps '2d''s
    data_identifier, so it reuses '2d''s preprocessed data. Hand-made before planners/time_budget.py planned
    such configurations (``--time_budget``); kept for the recorded runs that name them."""
    factor: int = 1  # spacing multiplier
    edge: int | None = None  # square patch edge; None: the planned patch
    stages: int | None = None  # the planned topology's first `stages` stages (at most all); None: all
    feature_divisor: int = 1


# BU-BIL: at 1/4 (203x256) one 256x256 window covers the whole image; at 1/8 (101x128) one 128x128 window does,
# with 6 stages so that the bottleneck stays 4x4 (a cell is then about 25 px across).
# LIDC: the planned 128x128 crops and topology at half the widths (about 1/4 of the convolution work).
CPU_CONFIGURATIONS = {
    "2d_halfres": CpuConfiguration(factor=2, edge=256),
    "2d_quarterres": CpuConfiguration(factor=4, edge=256),
    "2d_eighthres": CpuConfiguration(factor=8, edge=128, stages=6),
    "2d_lite": CpuConfiguration(feature_divisor=2),
}


def add_cpu_configuration(plans_file: Path, name: str, batch_size: int | None = None) -> dict:
    """Add CPU_CONFIGURATIONS[name] to the plans JSON (inheriting '2d'); ``batch_size`` None keeps the planned one."""
    from diffoseg_auto.utilities.file_ops import load_json, save_json

    spec = CPU_CONFIGURATIONS[name]
    plans = load_json(plans_file)
    base = plans["configurations"]["2d"]
    config: dict = {"inherits_from": "2d"}
    purpose = []
    if spec.factor != 1 or spec.edge is not None:
        edge = spec.edge or base["patch_size"][0]
        config.update({
            "data_identifier": f"{plans['plans_name']}_{name}",
            "spacing": [spec.factor * s for s in base["spacing"]],
            "median_image_size_in_voxels": [int(round(v / spec.factor)) for v in base["median_image_size_in_voxels"]],
            "patch_size": [edge] * len(base["patch_size"]),
        })
        purpose.append(f"1/{spec.factor} resolution and {edge}x{edge} patches")
    if batch_size is not None:
        config["batch_size"] = int(batch_size)
    arch = base["architecture"]
    stages = min(spec.stages or arch["n_stages"], arch["n_stages"])
    if spec.stages is not None or spec.feature_divisor != 1:
        # lists are replaced, not merged, by inheritance: write every per-stage list
        config["architecture"] = {
            "n_stages": stages, "n_conv_per_stage_decoder": arch["n_conv_per_stage_decoder"][:stages - 1],
            **{k: arch[k][:stages] for k in ("kernel_sizes", "strides", "n_conv_per_stage")},
            "features_per_stage": [max(8, f // spec.feature_divisor) for f in arch["features_per_stage"][:stages]]}
        purpose.append(f"{stages} stages, widths / {spec.feature_divisor}")
    config["notes"] = {"purpose": "CPU budget: " + ", ".join(purpose) + " (added by benchmarks/quality/real_data.py)"}
    plans["configurations"][name] = config
    save_json(plans, plans_file)
    return config


def prepare_lidc(dataset_id: int) -> None:
    """Convert the shared LIDC subset, plan and preprocess '2d', add the paper's reference configuration."""
    from dataset_conversion.convert_lidc import convert_lidc
    from planners.plan_and_preprocess_entrypoints import plan_and_preprocess
    from planners.reference_configuration import main as add_reference

    convert_lidc(LIDC, dataset_id, overwrite=True)
    plan_and_preprocess(["-d", str(dataset_id), "-c", "2d", "-np", "2", "--verify_dataset_integrity"])
    add_reference(["-d", str(dataset_id)])


def prepare_bubil(dataset_id: int, batch_size: int, configuration: str) -> None:
    """Convert BU-BIL and plan; a CPU configuration is added to the plans; ``configuration`` is preprocessed."""
    from dataset_conversion.convert_bubil import convert_bubil
    from planners.plan_and_preprocess_entrypoints import plan_and_preprocess

    convert_bubil(BUBIL, dataset_id, overwrite=True)
    plan_and_preprocess(["-d", str(dataset_id), "-c", "2d", "-np", "2", "--verify_dataset_integrity", "--no_pp"])
    add_configuration(dataset_id, configuration, batch_size)


def add_configuration(dataset_id: int, configuration: str, batch_size: int | None) -> None:
    """Add a CPU configuration (if ``configuration`` is one) to the dataset's plans and preprocess it (reuses '2d''s
    data where it can)."""
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from planners.plan_and_preprocess_entrypoints import preprocess

    if configuration in CPU_CONFIGURATIONS:
        add_cpu_configuration(preprocessed_root() / resolve_dataset_name(dataset_id) / f"{PLANS}.json", configuration,
                              batch_size)
    preprocess(["-d", str(dataset_id), "-c", configuration, "-np", "2"])


def prepare(kind: str, dataset_id: int, configuration: str, batch_size: int) -> None:
    """Convert, plan and preprocess the shared LIDC subset or BU-BIL; a ``configuration`` other than '2d' is one of
    CPU_CONFIGURATIONS, added to the plans and preprocessed."""
    if kind == "lidc":
        prepare_lidc(dataset_id)
        if configuration != "2d":
            add_configuration(dataset_id, configuration, None)
    else:
        prepare_bubil(dataset_id, batch_size=batch_size, configuration=configuration)


# ---------------------------------------------------------------- compare

def stage_minutes(trainer: str, minutes: float, stage1_fraction: float | None) -> tuple[float | None, float | None]:
    """(Stage I, Stage II) minutes: DiffOSeg splits the budget, a single-stage baseline takes all of it;
    ``stage1_fraction`` None (a time-budget configuration): DiffOSeg trains the planned schedule (None, None)."""
    from diffoseg_auto.training.trainer_registry import get_trainer_class

    if getattr(get_trainer_class(trainer), "is_baseline", False):
        return minutes, 0.0
    if stage1_fraction is None:
        return None, None
    return minutes * stage1_fraction, minutes * (1.0 - stage1_fraction)


def model_folder(dataset_id: int, trainer: str, configuration: str) -> Path:
    from diffoseg_auto.results_layout import trainer_folder
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    return trainer_folder(resolve_dataset_name(dataset_id), trainer, PLANS, configuration)


def is_trained(folder: Path, fold: int, stages: tuple[float | None, float | None]) -> bool:
    from diffoseg_auto.results_layout import checkpoint_path

    return all(checkpoint_path(folder, fold, s).is_file() for s, m in zip((1, 2), stages) if m is None or m > 0)


def trained_seconds(folder: Path, fold: int) -> dict:
    """Seconds in the epochs of each trained stage, from its final checkpoint (across --c resumes)."""
    from diffoseg_auto.io.checkpoint_io import load_checkpoint
    from diffoseg_auto.results_layout import checkpoint_path
    from diffoseg_auto.evaluation.learning_curves import epoch_seconds

    out = {}
    for s in (1, 2):
        p = checkpoint_path(folder, fold, s)
        if p.is_file():
            ck = load_checkpoint(p)
            out[f"stage{s}"] = {"epochs": int(ck["epoch"]), "epoch_seconds": round(epoch_seconds(ck["logging"]), 1)}
    return out


def soft_consensus(trainer: str) -> bool:
    """Whether the method's one deterministic output has a softmax that its samples do not show (the consensus
    U-Net): only then are the consensus probabilities saved."""
    from diffoseg_auto.training.trainer_registry import get_trainer_class

    return bool(getattr(getattr(get_trainer_class(trainer), "network_class", None), "soft_consensus", False))


def predict_fold(a: argparse.Namespace, trainer: str, fold: int | str, val_images: Path, cases: list[str],
                 out: Path | None = None, again: bool = False) -> dict:
    """diffoseg_predict on the fold's held-out images into ``out`` (default fold_<f>/val_predictions; the
    held-out test: fold_all/test_predictions), skipped when complete unless ``again`` or --retrain; an incomplete
    or retrained fold's earlier predictions are replaced."""
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
    from diffoseg_auto.results_layout import val_predictions_folder

    out = out or val_predictions_folder(model_folder(a.dataset_id, trainer, a.configuration), fold)
    if not (a.retrain or again) and all((out / "samples" / f"{c}.npz").is_file() for c in cases):
        return {"seconds_per_image": None, "reused": True}
    t0 = time.time()
    predict_from_folder(val_images, out, a.dataset_id, a.configuration, [fold], trainer=trainer, plans=PLANS,
                        num_samples=a.num_samples, sampling_steps=a.sampling_steps, save_samples=True, device=a.device,
                        save_probabilities=soft_consensus(trainer),  # that softmax is its calibration (issue 20)
                        use_mirroring=a.tta, num_processes_preprocessing=1, num_processes_export=1, overwrite=True)
    return {"seconds_per_image": round((time.time() - t0) / max(1, len(cases)), 2), "reused": False}


def predict_curve_points(a: argparse.Namespace, trainer: str, fold: int | str, val_images: Path, cases: list[str],
                         folder_of=None, again: bool = False) -> int:
    """diffoseg_predict -chk <point> of every learning-curve checkpoint into ``folder_of(trainer folder, fold,
    checkpoint)`` (default <fold>/learning_curve/<point>/; complete folders are reused unless ``again``); returns
    how many points were predicted now."""
    from diffoseg_auto.evaluation.learning_curves import curve_points
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
    from diffoseg_auto.results_layout import learning_curve_folder

    folder, done = model_folder(a.dataset_id, trainer, a.configuration), 0
    for p in curve_points(folder, fold):
        out = (folder_of or learning_curve_folder)(folder, fold, p["checkpoint"])
        if not again and all((out / "samples" / f"{c}.npz").is_file() for c in cases):
            continue
        predict_from_folder(val_images, out, a.dataset_id, a.configuration, [fold], trainer=trainer, plans=PLANS,
                            num_samples=a.num_samples, sampling_steps=a.sampling_steps, save_samples=True,
                            checkpoint_name=p["checkpoint"], device=a.device, use_mirroring=a.tta,
                            num_processes_preprocessing=1, num_processes_export=1, overwrite=True)
        done += 1
    return done


def run_method(a: argparse.Namespace, fold: int, trainer: str, work: Path, log: dict) -> None:
    """Train (unless trained) and predict one method on one fold; its entry goes into ``log``."""
    from diffoseg_auto.cli.fold_images import link_fold_images

    planned = a.time_budget is not None
    stages = stage_minutes(trainer, a.minutes, None if planned else a.stage1_fraction)
    entry = log.setdefault(trainer, {}).setdefault(str(fold), {"minutes": {"stage1": stages[0], "stage2": stages[1]}})
    folder = model_folder(a.dataset_id, trainer, a.configuration)
    try:
        if a.retrain or not is_trained(folder, fold, stages):
            # a planned configuration brings its own epochs; a budget run (--c) continues an interrupted stage
            entry["training"] = train_with_budget(a.dataset_id, a.configuration, stages[0], stages[1], threads=1,
                                                  iterations_per_epoch=None if planned else a.iterations_per_epoch,
                                                  fold=fold, trainer=trainer,
                                                  budget_clock="cpu" if a.device == "cpu" else "wall",
                                                  val_iterations=None if planned else a.val_iterations,
                                                  resume=planned and not a.retrain, device=a.device,
                                                  num_workers=a.num_workers)
        entry["trained"] = trained_seconds(folder, fold)
        val = work / f"val_images_fold{fold}"
        cases = link_fold_images(a.dataset_id, fold, val, max_cases=a.val_sample, seed=0)
        entry["prediction"] = predict_fold(a, trainer, fold, val, cases)
        if a.curves:
            entry["curve_points_predicted"] = predict_curve_points(a, trainer, fold, val, cases)
    except Exception as e:  # one failing method must not stop a long background run; it is recorded
        entry["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    print(f"fold {fold} {trainer}: {json.dumps(entry)}", flush=True)


def trainers_to_train(a: argparse.Namespace, fold: int) -> list[str]:
    """-tr less the methods that --record already holds for the fold (all of -tr without --record or with
    --retrain): a later session, whose machine has lost the run folders, trains only what is missing."""
    if not a.record or a.retrain:
        return list(a.tr)
    from diffoseg_auto.evaluation.method_comparison import method_label
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    have = recorded_methods(Path(a.record), resolve_dataset_name(a.dataset_id), a.configuration, fold)
    return [tr for tr in a.tr if method_label(tr) not in have]


def rows_of(per_fold: pd.DataFrame, trainers: list[str]) -> pd.DataFrame:
    """The rows of ``trainers``' methods and the reference rows (scored from the labels alone)."""
    from diffoseg_auto.evaluation.method_comparison import method_label

    return per_fold[per_fold["method"].isin({method_label(t) for t in trainers} | set(REFERENCE_METHODS))]


def record(a: argparse.Namespace, fold: int, trainers: list[str], out: Path, log: dict, planned: dict | None) -> None:
    """The fold's scored rows of ``trainers`` and the reference rows (compare's method_comparison_per_fold.csv),
    with their provenance, into --record. Another method's rows in that table may be predictions of an earlier
    run not yet retrained: they are left to that method's own record. ``planned``: the configuration's
    time-budget notes, read by the caller once per run."""
    import pandas as pd

    from diffoseg_auto.dataset.raw_dataset import RawDataset
    from diffoseg_auto.paths import raw_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    per_fold = out / "method_comparison_per_fold.csv"
    if not per_fold.is_file():
        return
    rows = rows_of(pd.read_csv(per_fold), trainers)
    ds = resolve_dataset_name(a.dataset_id)
    raters = RawDataset(raw_root() / ds).raters
    info = {"command": a.command_line, "time_budget_hours": a.time_budget, "minutes_per_method": a.minutes,
            "raters": raters, "methods": {tr: log.get(tr, {}).get(str(fold)) for tr in trainers}}
    if "DiffOSegTrainer" in trainers:  # the planner's word is about DiffOSeg's planned schedule: its run's notes
        info["time_budget"] = {k: v for k, v in (planned or {}).items() if k != "candidates"}
    record_fold(Path(a.record), rows, fold, info)
    if a.curves:  # the points' predictions go with the work folder; their scores stay in the record
        from diffoseg_auto.evaluation.learning_curves import collect_curves

        curve = collect_curves(ds, a.configuration, [fold], trainers, raw_root() / ds / "labelsTr", PLANS)
        record_curve(Path(a.record), ds, a.configuration, fold, curve)


def budget_notes(dataset_id: int, configuration: str) -> dict:
    """The configuration's time-budget notes as planned now ({} : not a planned budget), read once per run, which
    keeps its own copy (run.json, the fold records): planning the same budget again on another machine rewrites
    the plans' notes."""
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from diffoseg_auto.utilities.file_ops import load_json

    plans = load_json(preprocessed_root() / resolve_dataset_name(dataset_id) / f"{PLANS}.json")
    return plans["configurations"][configuration].get("notes", {}).get("time_budget", {})


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """Where compare and test train and predict."""
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="train and predict here (default cpu: one thread, --minutes on the process's CPU clock; cuda: "
                        "--minutes on the wall clock, benchmarks/gpu/gpu_compare.py)")
    p.add_argument("--num_workers", type=int, default=0, help="augmentation workers of training (default 0)")


def add_budget_arguments(p: argparse.ArgumentParser, per: str) -> None:
    """The training budget of compare (``per`` 'method and fold') and test ('method'): --minutes or --time_budget."""
    p.add_argument("--minutes", type=float, default=None, help=f"CPU minutes (one thread) per {per}")
    p.add_argument("--time_budget", type=float, default=None,
                   help=f"hours per {per}: plan a time-budget configuration from -c on this CPU "
                        "(planners/time_budget.py) and train DiffOSeg's planned schedule; baselines get the same hours")
    p.add_argument("--candidate", default=None, metavar="SPACING_FACTOR,WIDTH_DIVISOR",
                   help="--time_budget: plan this candidate (e.g. 2,1) instead of the rule's choice (the rule's sweep)")
    p.add_argument("--min_stage1_iterations", type=int, default=None,
                   help="--time_budget: the rule's threshold (default: the planner's)")
    p.add_argument("--stage1_fraction", type=float, default=2 / 3, help="DiffOSeg's share of the budget for Stage I")
    p.add_argument("--iterations_per_epoch", type=int, default=10,
                   help="the budget is checked after every epoch: short epochs waste less of it")
    p.add_argument("--val_iterations", type=int, default=1, help="validation-loss batches per epoch")


def check_budget_arguments(a: argparse.Namespace) -> None:
    """Exactly one of --minutes and --time_budget (the hours become a.minutes), a Stage I fraction in (0, 1] and
    the rule's threshold; a parser error otherwise."""
    if not 0 < a.stage1_fraction <= 1:
        a.parser.error("--stage1_fraction must be in (0, 1]")
    if (a.minutes is None) == (a.time_budget is None):
        a.parser.error("give exactly one of --minutes and --time_budget")
    if a.min_stage1_iterations is None:
        from planners.time_budget import MIN_STAGE1_ITERATIONS

        a.min_stage1_iterations = MIN_STAGE1_ITERATIONS
    if a.time_budget is not None:
        a.minutes = a.time_budget * 60


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--dataset_id", type=int, required=True)
    p.add_argument("-c", "--configuration", required=True)
    p.add_argument("-f", "--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("-tr", nargs="+", default=DEFAULT_TRAINERS, help="methods (default: DiffOSeg and the three baselines)")
    add_budget_arguments(p, "method and fold")
    p.add_argument("--out", required=True, help="folder for the comparison table, figures and run.json")
    p.add_argument("--work", default=None, help="point $diffoseg_raw/_preprocessed/_results into this folder")
    p.add_argument("--prepare", choices=["lidc", "bubil"], default=None, help="convert + plan + preprocess first")
    p.add_argument("--add_configuration", action="store_true",
                   help=f"add -c (one of {', '.join(CPU_CONFIGURATIONS)}) to the dataset's existing plans and "
                        "preprocess it first")
    p.add_argument("--num_samples", type=int, default=None, help="N per case (default: the plans')")
    p.add_argument("--sampling_steps", type=int, default=None, help="DiffOSeg's reverse steps (default: the plans')")
    p.add_argument("--batch_size", type=int, default=4, help="--prepare bubil: batch of the CPU configuration")
    p.add_argument("--curves", action="store_true",
                   help="also predict every learning-curve checkpoint of each fold and write learning_curves.* to --out")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation when predicting")
    add_device_arguments(p)
    p.add_argument("--val_sample", type=int, default=None, metavar="N",
                   help="predict and score a fixed, seeded sample (seed 0) of N of each fold's held-out cases "
                        "(a large dataset's fold; every method scores the same cases)")
    p.add_argument("--retrain", action="store_true", help="train and predict again even where results exist")
    p.add_argument("--record", default=None, metavar="DIR",
                   help="also keep every scored method of a fold as DIR/<Dataset>/<configuration>/fold_<f>.csv/.json "
                        "(real_data_records.py: commit them, and runs of several sessions add up); a fold recorded "
                        "for every method is reused, not trained again (unless --retrain)")


def compare(a: argparse.Namespace) -> None:
    check_budget_arguments(a)
    import torch

    if a.device == "cpu":
        torch.set_num_threads(1)
    from diffoseg_auto.evaluation.comparison_report import ComparisonSettings, compare_methods
    from diffoseg_auto.utilities.file_ops import save_json

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.work:
        set_env(Path(a.work))
    work = Path(a.work) if a.work else out
    if a.prepare:
        prepare(a.prepare, a.dataset_id, a.configuration, a.batch_size)
    elif a.add_configuration:
        add_configuration(a.dataset_id, a.configuration, None)
    if a.time_budget is not None:
        a.configuration = plan_budget_configuration(a.dataset_id, a.configuration, a.time_budget, a.candidate,
                                                    a.min_stage1_iterations)
    # the plan's notes, read once: run.json keeps them for a budget run, the fold records for DiffOSeg's rows
    planned = budget_notes(a.dataset_id, a.configuration) if a.time_budget is not None or a.record else None
    t0, log, done = time.time(), {}, []
    for fold in a.folds:
        trainers = trainers_to_train(a, fold)
        if len(trainers) < len(a.tr):
            print(f"fold {fold}: {', '.join(sorted(set(a.tr) - set(trainers)))} recorded in {a.record}, reused "
                  "(--retrain trains them again)", flush=True)
        if not trainers:
            continue
        done.append(fold)
        for trainer in trainers:  # scored and recorded per method: a session cut mid-fold keeps what finished
            run_method(a, fold, trainer, work, log)
            # methods recorded by an earlier run have no predictions here: the table skips them, the record keeps them
            compare_methods([a.dataset_id], [a.configuration], done, a.tr, out, PLANS,
                            ComparisonSettings(figures=True, num_samples=a.num_samples))
            if a.record:
                record(a, fold, [trainer], out, log, planned)
        save_json({"command": a.command_line, "configuration": a.configuration, "time_budget_hours": a.time_budget,
                   "time_budget": planned if a.time_budget is not None else None,
                   "minutes_per_method_and_fold": a.minutes,
                   "stage1_fraction": a.stage1_fraction, "device": a.device, "num_workers": a.num_workers,
                   "threads": torch.get_num_threads(), "budget_clock": "cpu" if a.device == "cpu" else "wall",
                   "iterations_per_epoch": a.iterations_per_epoch, "folds_done": done,
                   "wall_minutes": round((time.time() - t0) / 60, 1), "methods": log}, out / "run.json")
        if a.curves:
            from diffoseg_auto.evaluation.learning_curves import write_learning_curves
            from diffoseg_auto.paths import raw_root
            from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

            ds = resolve_dataset_name(a.dataset_id)
            write_learning_curves(ds, a.configuration, done, a.tr, raw_root() / ds / "labelsTr", out, PLANS)
    print((out / "method_comparison.md").read_text() if (out / "method_comparison.md").is_file() else "no table")
