"""DiffOSeg against the baselines on a real dataset: the same CPU budget per method and fold.

For every fold and every method (``-tr``, default DiffOSeg and the three baselines) this trains with a
wall-clock budget of ``--minutes`` on ONE CPU thread (so wall-clock minutes are CPU minutes; DiffOSeg
splits them between Stage I and Stage II by ``--stage1_fraction``, a baseline has one stage and gets all
of them), predicts the fold's held-out images with diffoseg_predict into
``<results>/<Dataset>/<TR>__<P>__<C>/fold_<f>/val_predictions`` (N samples, every rater prompt, no TTA
unless ``--tta``), and then writes the methods x metrics table of ``diffoseg_benchmark -tr ...`` (with
the all-empty, majority-repeated and inter-rater rows) into ``--out``; the table is refreshed after
every fold, so a background run can be read while it goes on. Trained folds and finished predictions
are reused (``--retrain`` trains again).

    # LIDC subset (converted and preprocessed by --prepare lidc), 5 folds, 30 CPU minutes per method and fold
    nohup python benchmarks/real_data_comparison.py --prepare lidc -d 100 -c 2d -f 0 1 2 3 4 --minutes 30 \\
        --out /tmp/cmp_lidc > /tmp/cmp_lidc.log 2>&1 &
    # BU-BIL at half resolution (the CPU configuration of bubil_cpu_budget.py)
    nohup python benchmarks/real_data_comparison.py --prepare bubil -d 101 -c 2d_halfres --minutes 30 \\
        --out /tmp/cmp_bubil > /tmp/cmp_bubil.log 2>&1 &

Without ``--work`` the script uses the environment's $diffoseg_raw / _preprocessed / _results.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy / torch load
    os.environ.setdefault(_var, "1")

import argparse
import json
import shlex
import sys
import time
import traceback
from pathlib import Path

from budget_common import set_env, train_with_budget

DEFAULT_TRAINERS = ["DiffOSegTrainer", "ConsensusUNetTrainer", "MultiHeadUNetTrainer", "ProbUNetTrainer"]
PLANS = "DiffOSegPlans"


def stage_minutes(trainer: str, minutes: float, stage1_fraction: float | None) -> tuple[float | None, float | None]:
    """(Stage I, Stage II) minutes: DiffOSeg splits the budget, a single-stage baseline takes all of it;
    ``stage1_fraction`` None (a time-budget configuration): DiffOSeg trains the planned schedule (None, None)."""
    from diffoseg_auto.training.trainer_registry import get_trainer_class

    if getattr(get_trainer_class(trainer), "is_baseline", False):
        return minutes, 0.0
    if stage1_fraction is None:
        return None, None
    return minutes * stage1_fraction, minutes * (1.0 - stage1_fraction)


def plan_budget_configuration(a: argparse.Namespace) -> str:
    """Plan ``--time_budget`` hours from -c on this CPU (one thread, in-process augmentation, as these runs train),
    named after the chosen candidate so that a rerun, or another rule threshold choosing the same candidate,
    reuses its configuration, data and trained folds; returns its name."""
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from diffoseg_auto.utilities.file_ops import load_json, save_json
    from planners.plan_and_preprocess_entrypoints import preprocess
    from planners.time_budget import Candidate, budget_summary, median_object_voxels_of, plan_time_budget

    folder = preprocessed_root() / resolve_dataset_name(a.dataset_id)
    plans_file = folder / f"{PLANS}.json"
    plans, fingerprint = load_json(plans_file), load_json(folder / "dataset_fingerprint.json")
    force = None
    if a.candidate:  # a sweep over candidates (tuning folds only): this candidate's schedule, whatever the rule says
        f, d = (int(x) for x in a.candidate.split(","))
        force = Candidate(f, d)
    _, config = plan_time_budget(plans, a.configuration, a.time_budget, "cpu", num_workers=0, force=force,
                                 min_stage1_iterations=a.min_stage1_iterations,
                                 median_object_voxels=median_object_voxels_of(fingerprint),
                                 num_cases=fingerprint.get("num_cases"))
    name = f"{a.configuration}_{a.time_budget:g}h_{config['notes']['time_budget']['chosen']}"
    if name in plans["configurations"]:
        print(f"time budget: reusing configuration {name} (planned earlier)", flush=True)
    else:
        plans["configurations"][name] = config
        save_json(plans, plans_file)
        print(budget_summary(name, config), flush=True)
    preprocess(["-d", str(a.dataset_id), "-c", name, "-np", "2"])  # reuses complete preprocessed data
    return name


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


def predict_fold(a: argparse.Namespace, trainer: str, fold: int, val_images: Path, cases: list[str]) -> dict:
    """diffoseg_predict on the fold's held-out images into fold_<f>/val_predictions (skipped when complete;
    an incomplete or retrained fold's earlier predictions are replaced)."""
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
    from diffoseg_auto.results_layout import val_predictions_folder

    out = val_predictions_folder(model_folder(a.dataset_id, trainer, a.configuration), fold)
    if not a.retrain and all((out / "samples" / f"{c}.npz").is_file() for c in cases):
        return {"seconds_per_image": None, "reused": True}
    t0 = time.time()
    predict_from_folder(val_images, out, a.dataset_id, a.configuration, [fold], trainer=trainer, plans=PLANS,
                        num_samples=a.num_samples, sampling_steps=a.sampling_steps, save_samples=True, device="cpu",
                        use_mirroring=a.tta, num_processes_preprocessing=1, num_processes_export=1, overwrite=True)
    return {"seconds_per_image": round((time.time() - t0) / max(1, len(cases)), 2), "reused": False}


def predict_curve_points(a: argparse.Namespace, trainer: str, fold: int, val_images: Path, cases: list[str]) -> int:
    """diffoseg_predict -chk <point> of every learning-curve checkpoint into <fold>/learning_curve/<point>/
    (complete folders are reused); returns how many points were predicted now."""
    from diffoseg_auto.evaluation.learning_curves import curve_points
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
    from diffoseg_auto.results_layout import learning_curve_folder

    folder, done = model_folder(a.dataset_id, trainer, a.configuration), 0
    for p in curve_points(folder, fold):
        out = learning_curve_folder(folder, fold, p["checkpoint"])
        if all((out / "samples" / f"{c}.npz").is_file() for c in cases):
            continue
        predict_from_folder(val_images, out, a.dataset_id, a.configuration, [fold], trainer=trainer, plans=PLANS,
                            num_samples=a.num_samples, sampling_steps=a.sampling_steps, save_samples=True,
                            checkpoint_name=p["checkpoint"], device="cpu", use_mirroring=a.tta,
                            num_processes_preprocessing=1, num_processes_export=1, overwrite=True)
        done += 1
    return done


def run_fold(a: argparse.Namespace, fold: int, work: Path, log: dict) -> None:
    from diffoseg_auto.cli.fold_images import link_fold_images

    for trainer in a.tr:
        planned = a.time_budget is not None
        stages = stage_minutes(trainer, a.minutes, None if planned else a.stage1_fraction)
        entry = log.setdefault(trainer, {}).setdefault(str(fold), {"minutes": {"stage1": stages[0], "stage2": stages[1]}})
        folder = model_folder(a.dataset_id, trainer, a.configuration)
        try:
            if a.retrain or not is_trained(folder, fold, stages):
                # a planned configuration brings its own epochs; a budget run (--c) continues an interrupted stage
                entry["training"] = train_with_budget(a.dataset_id, a.configuration, stages[0], stages[1], threads=1,
                                                      iterations_per_epoch=None if planned else a.iterations_per_epoch,
                                                      fold=fold, trainer=trainer, budget_clock="cpu",
                                                      val_iterations=None if planned else a.val_iterations,
                                                      resume=planned and not a.retrain)
            entry["trained"] = trained_seconds(folder, fold)
            val = work / f"val_images_fold{fold}"
            cases = link_fold_images(a.dataset_id, fold, val)
            entry["prediction"] = predict_fold(a, trainer, fold, val, cases)
            if a.curves:
                entry["curve_points_predicted"] = predict_curve_points(a, trainer, fold, val, cases)
        except Exception as e:  # one failing method must not stop a long background run; it is recorded
            entry["error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        print(f"fold {fold} {trainer}: {json.dumps(entry)}", flush=True)


def prepare(kind: str, dataset_id: int, configuration: str, batch_size: int) -> None:
    """Convert, plan and preprocess the shared LIDC subset or BU-BIL (as the budget scripts do); a ``configuration``
    other than '2d' is one of cpu_configurations.CPU_CONFIGURATIONS, added to the plans and preprocessed."""
    if kind == "lidc":
        from lidc_equal_budget import prepare as prepare_lidc

        prepare_lidc(dataset_id)
        if configuration != "2d":
            add_configuration(dataset_id, configuration, None)
    else:
        from bubil_cpu_budget import prepare as prepare_bubil

        prepare_bubil(dataset_id, batch_size=batch_size, configuration=configuration)


def add_configuration(dataset_id: int, configuration: str, batch_size: int | None) -> None:
    """Add a CPU configuration to the dataset's existing plans and preprocess it (reuses '2d''s data where it can)."""
    from cpu_configurations import add_cpu_configuration
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from planners.plan_and_preprocess_entrypoints import preprocess

    add_cpu_configuration(preprocessed_root() / resolve_dataset_name(dataset_id) / f"{PLANS}.json", configuration,
                          batch_size)
    preprocess(["-d", str(dataset_id), "-c", configuration, "-np", "2"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-d", "--dataset_id", type=int, required=True)
    p.add_argument("-c", "--configuration", required=True)
    p.add_argument("-f", "--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("-tr", nargs="+", default=DEFAULT_TRAINERS, help="methods (default: DiffOSeg and the three baselines)")
    p.add_argument("--minutes", type=float, default=None, help="CPU minutes (one thread) per method and fold")
    p.add_argument("--time_budget", type=float, default=None,
                   help="hours per method and fold: plan a time-budget configuration from -c on this CPU "
                        "(planners/time_budget.py) and train DiffOSeg's planned schedule; baselines get the same hours")
    p.add_argument("--candidate", default=None, metavar="SPACING_FACTOR,WIDTH_DIVISOR",
                   help="--time_budget: plan this candidate (e.g. 2,1) instead of the rule's choice (the rule's sweep)")
    p.add_argument("--min_stage1_iterations", type=int, default=None,
                   help="--time_budget: the rule's threshold (default: the planner's)")
    p.add_argument("--stage1_fraction", type=float, default=2 / 3, help="DiffOSeg's share of the budget for Stage I")
    p.add_argument("--out", required=True, help="folder for the comparison table, figures and run.json")
    p.add_argument("--work", default=None, help="point $diffoseg_raw/_preprocessed/_results into this folder")
    p.add_argument("--prepare", choices=["lidc", "bubil"], default=None, help="convert + plan + preprocess first")
    p.add_argument("--add_configuration", action="store_true",
                   help="add -c (one of cpu_configurations.py) to the dataset's existing plans and preprocess it first")
    p.add_argument("--num_samples", type=int, default=None, help="N per case (default: the plans')")
    p.add_argument("--sampling_steps", type=int, default=None, help="DiffOSeg's reverse steps (default: the plans')")
    p.add_argument("--iterations_per_epoch", type=int, default=10,
                   help="the budget is checked after every epoch: short epochs waste less of it")
    p.add_argument("--val_iterations", type=int, default=1, help="validation-loss batches per epoch")
    p.add_argument("--batch_size", type=int, default=4, help="--prepare bubil: batch of the CPU configuration")
    p.add_argument("--curves", action="store_true",
                   help="also predict every learning-curve checkpoint of each fold and write learning_curves.* to --out")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation when predicting")
    p.add_argument("--retrain", action="store_true", help="train and predict again even where results exist")
    a = p.parse_args(argv)
    if not 0 < a.stage1_fraction <= 1:
        p.error("--stage1_fraction must be in (0, 1]")
    if (a.minutes is None) == (a.time_budget is None):
        p.error("give exactly one of --minutes and --time_budget")
    if a.min_stage1_iterations is None:
        from planners.time_budget import MIN_STAGE1_ITERATIONS

        a.min_stage1_iterations = MIN_STAGE1_ITERATIONS
    if a.time_budget is not None:
        a.minutes = a.time_budget * 60
    import torch

    torch.set_num_threads(1)
    from diffoseg_auto.evaluation.comparison_report import compare_methods

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
        a.configuration = plan_budget_configuration(a)
    t0, log = time.time(), {}
    command = "python benchmarks/real_data_comparison.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    for i, fold in enumerate(a.folds):
        run_fold(a, fold, work, log)
        compare_methods([a.dataset_id], [a.configuration], a.folds[:i + 1], a.tr, out, PLANS, figures=True,
                        num_samples=a.num_samples)
        (out / "run.json").write_text(json.dumps({"command": command, "configuration": a.configuration,
                                                  "time_budget_hours": a.time_budget,
                                                  "minutes_per_method_and_fold": a.minutes,
                                                  "stage1_fraction": a.stage1_fraction, "threads": 1,
                                                  "budget_clock": "cpu", "iterations_per_epoch": a.iterations_per_epoch,
                                                  "folds_done": a.folds[:i + 1], "wall_minutes": round((time.time() - t0) / 60, 1),
                                                  "methods": log}, indent=2))
        if a.curves:
            from diffoseg_auto.evaluation.learning_curves import write_learning_curves
            from diffoseg_auto.paths import raw_root
            from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

            ds = resolve_dataset_name(a.dataset_id)
            write_learning_curves(ds, a.configuration, a.folds[:i + 1], a.tr, raw_root() / ds / "labelsTr", out, PLANS)
    print((out / "method_comparison.md").read_text() if (out / "method_comparison.md").is_file() else "no table")


if __name__ == "__main__":
    main()
