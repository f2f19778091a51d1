"""Real-data quality: DiffOSeg against the baselines at the same CPU budget, and its sweeps.

    # LIDC subset (converted and preprocessed by --prepare lidc), 5 folds, 30 CPU minutes per method and fold
    nohup python benchmarks/real_data.py compare --prepare lidc -d 100 -c 2d -f 0 1 2 3 4 --minutes 30 \\
        --out /tmp/cmp_lidc > /tmp/cmp_lidc.log 2>&1 &
    # the same with a time-budget configuration planned for 0.5 h per method and fold on this CPU
    python benchmarks/real_data.py compare -d 100 -c 2d -f 0 1 2 3 4 --time_budget 0.5 --out /tmp/cmp_lidc_tb
    # Stage I against the number of sampling steps (and mirroring TTA) of a trained fold
    python benchmarks/real_data.py steps --work /tmp/lidc -d 100 -c 2d -f 0 --steps 5 10 25 50 --tta
    # the paper's Stage II prompt block against the default from the same Stage I (after compare, same --work)
    python benchmarks/real_data.py prompt_blocks --work /tmp/lidc -d 100 -c 2d -f 0 1 2 3 4 --out /tmp/blocks

``compare`` (formerly benchmarks/real_data_comparison.py, which still runs it with the same options): for
every fold and every method (``-tr``, default DiffOSeg and the three baselines) it trains with a budget of
``--minutes`` CPU minutes on ONE CPU thread (DiffOSeg splits them between Stage I and Stage II by
``--stage1_fraction``, a baseline has one stage and gets all of them; ``--time_budget HOURS`` instead plans a
configuration from ``-c`` whose two stages fit the hours on this CPU, planners/time_budget.py), predicts the
fold's held-out images with diffoseg_predict into ``<results>/<Dataset>/<TR>__<P>__<C>/fold_<f>/val_predictions``
(N samples, every rater prompt, no TTA unless ``--tta``), and then writes the methods x metrics table of
``diffoseg_benchmark -tr ...`` (with the all-empty, majority-repeated and inter-rater rows) into ``--out``; the
table is refreshed after every fold, so a background run can be read while it goes on. Trained folds and
finished predictions are reused (``--retrain`` trains again). Plans overrides: ``--add_configuration`` adds one
of the CPU configurations below as ``-c``; any other override is a configuration the user adds to the plans
JSON (``{"inherits_from": "2d", ...}``) and names with ``-c``.

Without ``--work`` the tool uses the environment's $diffoseg_raw / _preprocessed / _results.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from bench_lib import (PLANS, add_prompt_block_configuration, format_rater_samples_row, format_sweep_row, markdown_table,
                       matrix_margins, one_se_choices, one_thread_default, plan_budget_configuration, rater_samples_sweep, set_env, share_stage1,
                       sweep, train_with_budget)

ROOT = Path(__file__).resolve().parents[1]
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
    config["notes"] = {"purpose": "CPU budget: " + ", ".join(purpose) + " (added by benchmarks/real_data.py)"}
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


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
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
                   help=f"add -c (one of {', '.join(CPU_CONFIGURATIONS)}) to the dataset's existing plans and "
                        "preprocess it first")
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


def compare(a: argparse.Namespace) -> None:
    if not 0 < a.stage1_fraction <= 1:
        a.parser.error("--stage1_fraction must be in (0, 1]")
    if (a.minutes is None) == (a.time_budget is None):
        a.parser.error("give exactly one of --minutes and --time_budget")
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
        a.configuration = plan_budget_configuration(a.dataset_id, a.configuration, a.time_budget, a.candidate,
                                                    a.min_stage1_iterations)
    t0, log = time.time(), {}
    for i, fold in enumerate(a.folds):
        run_fold(a, fold, work, log)
        compare_methods([a.dataset_id], [a.configuration], a.folds[:i + 1], a.tr, out, PLANS, figures=True,
                        num_samples=a.num_samples)
        (out / "run.json").write_text(json.dumps({"command": a.command_line, "configuration": a.configuration,
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


# ---------------------------------------------------------------- steps: Stage I against the number of sampling steps

def reference_rows(raw_folder: Path, rows: list[dict], num_samples: int) -> dict[str, dict[str, float]]:
    """Strict GED / Dice_soft of every sweep row, all-empty, majority repeated and inter-rater, on the same cases."""
    from diffoseg_auto.dataset.raw_dataset import RawDataset
    from diffoseg_auto.evaluation.method_comparison import score_fold
    from diffoseg_auto.evaluation.prediction_folder import list_predicted_cases

    ds = RawDataset(raw_folder)
    folders = {f"S={r['S']}{' +TTA' if r['mirroring'] else ''}": [Path(r["folder"])] for r in rows}
    cases = sorted(set.intersection(*(set(list_predicted_cases(f[0], ds.file_ending)) for f in folders.values())))
    scores, _ = score_fold(ds, folders, cases, num_samples, modes=("strict",))
    return {row: {k: scores[(row, "strict")].get(k) for k in ("GED", "Dice_soft")} for row, _ in scores}


def steps(a: argparse.Namespace) -> None:
    work = Path(a.work)
    set_env(work)
    from diffoseg_auto.plans.plans import load_plans
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    name = resolve_dataset_name(a.d)
    labels = work / "raw" / name / "labelsTr"
    diffusion = load_plans(work / "preprocessed" / name / f"{PLANS}.json").get_configuration(a.c).diffusion
    tag = f"_d{a.d}_{a.c}_f{a.f}"  # one --work may hold several datasets, configurations and folds
    rows = sweep(a.d, a.c, a.f, a.steps, work, labels, a.num_samples, tag=tag, predict=not a.score_only)
    if a.tta:
        rows += sweep(a.d, a.c, a.f, [diffusion.sampling_steps], work, labels, a.num_samples, mirroring=True,
                      tag=tag + "_tta", predict=not a.score_only)
    table = reference_rows(labels.parent, rows, a.num_samples or diffusion.num_samples)
    rater_rows = rater_samples_sweep(a.d, a.c, a.f, a.samples_per_rater, work, labels, tag=tag,
                                     predict=not a.score_only) if a.samples_per_rater else []
    choices = one_se_choices(rows, rater_rows)
    out = work / f"steps_sweep{tag}.json"
    out.write_text(json.dumps({"dataset": name, "configuration": a.c, "fold": a.f, "tuning_fold": a.f == 0,
                               "rows": rows, "same_cases_strict": table, "samples_per_rater_rows": rater_rows,
                               "one_se_choices": choices}, indent=2))
    for r in rows:
        print(format_sweep_row(r))
    for r in rater_rows:
        print(format_rater_samples_row(r))
    print(f"one-standard-error rule picks: {choices}")
    print(markdown_table(["row", "GED", "Dice_soft"], [[row, f"{m['GED']:.3f}", f"{m['Dice_soft']:.3f}"]
                                                       for row, m in table.items()]))
    print(f"written {out}")


# ---------------------------------------------------------------- prompt_blocks: the two Stage II prompt blocks

def residual_iterations(comparison_out: str | None, fold: int) -> int | None:
    """Stage II iterations of the default block in the comparison's run.json (None: unknown)."""
    run = Path(comparison_out or "") / "run.json"
    if not comparison_out or not run.is_file():
        return None
    entry = json.loads(run.read_text()).get("methods", {}).get(TRAINER, {}).get(str(fold), {})
    return entry.get("training", {}).get("stage2", {}).get("iterations")


def score_blocks(ds, folders: dict[str, Path], cases: list[str], num_samples: int) -> dict:
    """Per block: strict per-rater Dice, area Spearman, and the rater x prompt matrix with its margins."""
    from diffoseg_auto.evaluation.evaluate_entrypoint import evaluate_folder
    from diffoseg_auto.evaluation.method_comparison import AREA_SPEARMAN, score_fold

    scored, _ = score_fold(ds, {b: [f] for b, f in folders.items()}, cases, num_samples, modes=("strict",))
    out = {}
    for block, folder in folders.items():
        m = scored[(block, "strict")]
        summary = evaluate_folder(ds.folder / "labelsTr", folder, folder / "summary_blocks.json")
        out[block] = {"Dice_rater_strict": m.get("Dice_rater_strict"), AREA_SPEARMAN: m.get(AREA_SPEARMAN),
                      "per_rater": {r: m.get(f"Dice_rater_strict/{k}") for k, r in enumerate(ds.raters)},
                      **matrix_margins(summary["rater_prompt_dice_matrix"])}
    return out


def render_blocks(result: dict) -> str:
    rows = [[fold, block, r.get("stage2_iterations") or "-", f"{r['Dice_rater_strict']:.4f}",
             f"{sum(m > 0 for m in r['row_margins'])} of {len(r['row_margins'])}",
             f"{r['diagonal_minus_off_diagonal']:+.4f}", f"{r['Rater_area_spearman']:.3f}"]
            for fold, by_block in result["folds"].items() for block, r in by_block.items()]
    rows += [["mean", block, "", f"{m['Dice_rater_strict']:.4f}", "", f"{m['diagonal_minus_off_diagonal']:+.4f}",
              f"{m['Rater_area_spearman']:.3f}"] for block, m in result["mean_over_folds"].items()]
    return markdown_table(["fold", "block", "Stage II iterations", "strict per-rater Dice", "rows with max on diagonal",
                           "mean diag - off-diag", "rater-area Spearman"], rows, left=2) + "\n"


def prompt_blocks(a: argparse.Namespace) -> None:
    """After ``compare`` in the same --work: per fold, a configuration ``<c>_paper`` (inherits -c; only
    stage2.prompt_block = 'paper' differs) gets that fold's Stage I checkpoint, trains Stage II for --minutes
    CPU minutes, predicts the rater prompts of the same images; both blocks are scored on the same cases."""
    import numpy as np

    work, out = Path(a.work), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.render_only:
        result = json.loads((out / "prompt_blocks.json").read_text())
        for fold, scores in result["folds"].items():
            scores["residual"]["stage2_iterations"] = residual_iterations(a.comparison_out, int(fold))
        (out / "prompt_blocks.json").write_text(json.dumps(result, indent=2))
        (out / "prompt_blocks.md").write_text(render_blocks(result))
        return
    set_env(work)
    import torch

    torch.set_num_threads(1)
    from diffoseg_auto.cli.fold_images import link_fold_images
    from diffoseg_auto.dataset.raw_dataset import RawDataset
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
    from diffoseg_auto.paths import preprocessed_root, raw_root
    from diffoseg_auto.results_layout import checkpoint_path, trainer_folder, val_predictions_folder
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    name = resolve_dataset_name(a.dataset_id)
    ds = RawDataset(raw_root() / name)
    plans_file = preprocessed_root() / name / f"{PLANS}.json"
    paper_cfg = add_prompt_block_configuration(plans_file, "paper", base=a.configuration)
    base_folder = trainer_folder(name, TRAINER, PLANS, a.configuration)
    paper_folder = trainer_folder(name, TRAINER, PLANS, paper_cfg)
    result, t0 = {"command": a.command_line, "folds": {}}, time.time()
    if (out / "prompt_blocks.json").is_file():  # folds of earlier invocations (one fold per run is fine)
        result["folds"] = json.loads((out / "prompt_blocks.json").read_text())["folds"]
    for fold in a.folds:
        share_stage1(checkpoint_path(base_folder, fold, 1), checkpoint_path(paper_folder, fold, 1), paper_cfg, plans_file)
        # the comparison's epochs (10 iterations, 1 validation batch), so that the budget is cut alike
        training = train_with_budget(a.dataset_id, paper_cfg, 0, a.minutes, threads=1, fold=fold, budget_clock="cpu",
                                     iterations_per_epoch=10, val_iterations=1)
        cases = link_fold_images(a.dataset_id, fold, work / f"val_images_fold{fold}")
        pred = val_predictions_folder(paper_folder, fold)
        predict_from_folder(work / f"val_images_fold{fold}", pred, a.dataset_id, paper_cfg, [fold], num_samples=1,
                            sampling_steps=a.sampling_steps, save_samples=True, device="cpu", use_mirroring=False,
                            num_processes_preprocessing=1, num_processes_export=1, overwrite=True)
        folders = {"residual": val_predictions_folder(base_folder, fold), "paper": pred}
        scores = score_blocks(ds, folders, cases, num_samples=1)
        scores["residual"]["stage2_iterations"] = residual_iterations(a.comparison_out, fold)
        scores["paper"]["stage2_iterations"] = training["stage2"]["iterations"]
        result["folds"][str(fold)] = scores
        blocks = ["residual", "paper"]
        result["mean_over_folds"] = {b: {k: float(np.nanmean([f[b][k] for f in result["folds"].values()]))
                                         for k in ("Dice_rater_strict", "diagonal_minus_off_diagonal", "Rater_area_spearman")}
                                     for b in blocks}
        result["wall_minutes"] = round((time.time() - t0) / 60, 1)
        (out / "prompt_blocks.json").write_text(json.dumps(result, indent=2))
        (out / "prompt_blocks.md").write_text(render_blocks(result))
        print(f"fold {fold}: {json.dumps(scores)}", flush=True)


SWEEP_METRICS = ("GED", "Dice_soft", "Dice_rater_strict", "ECE", "Brier", "Uncertainty_NCC")


def budget_sweep(a: argparse.Namespace) -> None:
    """The time-budget rule's sweep table from compare --time_budget outputs (--out folders): per run the candidate,
    its planned schedule and estimate, the time it took (the epochs' seconds in the final checkpoints plus the
    measured stage start-up, and the wall seconds of the training calls when no resume split them), and DiffOSeg's
    held-out metrics with the trivial and inter-rater rows of the same cases."""
    import pandas as pd

    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.utilities.file_ops import load_json

    rows, refs = [], {}
    for out in map(Path, a.outs):
        if not (out / "run.json").is_file() or not (out / "method_comparison.csv").is_file():
            print(f"{out}: no run.json / method_comparison.csv yet (run not finished); skipped")
            continue
        run = load_json(out / "run.json")
        table = pd.read_csv(out / "method_comparison.csv")
        strict = table[table["mode"] == "strict"].set_index(["method", "metric"])["mean"]
        ds = table["dataset"].iloc[0]
        cfg = load_json(preprocessed_root() / ds / "DiffOSegPlans.json")["configurations"][run["configuration"]]
        tb = cfg["notes"]["time_budget"]
        row = next(r for r in tb["candidates"] if r["candidate"] == tb["chosen"])
        for trainer, folds in run["methods"].items():
            for fold, e in folds.items():
                trained = e.get("trained", {})
                epoch_s = sum(v["epoch_seconds"] for v in trained.values())
                wall = e.get("training", {})
                wall_s = sum(v["seconds"] for v in wall.values()) if len(wall) == len(trained) else None
                rows.append({"dataset": ds, "hours": tb["hours"], "candidate": tb["chosen"], "fold": fold,
                             "stage1_iterations": row["stage1"]["iterations"],
                             "stage2_iterations": row["stage2"]["iterations"] if row["stage2"] else 0,
                             "planned_h": tb["estimated_training_hours"], "epochs_h": round(epoch_s / 3600, 3),
                             "wall_h": None if wall_s is None else round(wall_s / 3600, 3),
                             # the planner's word: the time taken against the hours asked (goal: within 15%)
                             "taken_vs_asked": f"{100 * (epoch_s / 3600 / tb['hours'] - 1):+.0f}%",
                             **{m: strict.get((trainer.removesuffix("Trainer"), m)) for m in SWEEP_METRICS}})
        for ref in ("all-empty", "raters' majority repeated", "inter-rater"):
            refs[(ds, ref)] = {m: strict.get((ref, m)) for m in ("GED", "Dice_soft")}
    fmt = lambda v: "" if v is None or v != v else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    cols = ["dataset", "hours", "candidate", "fold", "stage1_iterations", "stage2_iterations", "planned_h",
            "epochs_h", "wall_h", "taken_vs_asked", *SWEEP_METRICS]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    lines += ["", "| dataset | reference row (same cases) | GED | Dice_soft |", "|---|---|---:|---:|"]
    lines += [f"| {ds} | {ref} | {fmt(v['GED'])} | {fmt(v['Dice_soft'])} |" for (ds, ref), v in refs.items()]
    text = "\n".join(lines) + "\n"
    if a.md:
        Path(a.md).write_text(text)
    print(text)


# ---------------------------------------------------------------- command line

def build_parser(prog: str = "benchmarks/real_data.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="DiffOSeg and the baselines, same CPU budget per method and fold",
                       description="Train every method (-tr) on every fold at the same CPU budget (--minutes, or "
                                   "--time_budget hours of a planned configuration), predict the held-out images "
                                   "and write the diffoseg_benchmark comparison into --out after every fold.")
    add_compare_arguments(c)
    c.set_defaults(func=compare, parser=c)
    s = sub.add_parser("steps", help="Stage I quality against the number of sampling steps S (and mirroring TTA)",
                       description="Predict a fold's held-out cases at every S (Stage I only), score them (strict, "
                                   "mean ± standard error over cases, whole-mask fraction) with the all-empty, "
                                   "majority-repeated and inter-rater rows on the same cases; writes "
                                   "<work>/steps_sweep_d<d>_<c>_f<f>.json. --work holds raw/, preprocessed/ and results/ "
                                   "of a trained model.")
    s.add_argument("--work", required=True)
    s.add_argument("-d", type=int, required=True)
    s.add_argument("-c", default="2d")
    s.add_argument("-f", type=int, default=0)
    s.add_argument("--steps", nargs="+", type=int, default=[5, 10, 25, 50])
    s.add_argument("--num_samples", type=int, default=None, help="default: the plans' diffusion.num_samples")
    s.add_argument("--tta", action="store_true", help="also predict at the planned S with mirroring")
    s.add_argument("--samples_per_rater", nargs="*", type=int, default=[],
                   help="also strict per-rater Dice against these Stage II samples per rater prompt")
    s.add_argument("--score_only", action="store_true", help="score the existing predictions, do not sample again")
    s.set_defaults(func=steps)
    b = sub.add_parser("prompt_blocks", help="the paper's Stage II prompt block against the default, same Stage I",
                       description=prompt_blocks.__doc__.replace("``", "") + " Results: --out/prompt_blocks.json "
                                   "and .md (strict per-rater Dice, rows with the maximum on the diagonal, mean "
                                   "diagonal minus off-diagonal, rater-area Spearman).")
    b.add_argument("--work", required=True, help="the --work folder of compare")
    b.add_argument("-d", "--dataset_id", type=int, required=True)
    b.add_argument("-c", "--configuration", required=True)
    b.add_argument("-f", "--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    b.add_argument("--minutes", type=float, default=5 / 3, help="Stage II CPU minutes of the paper block")
    b.add_argument("--sampling_steps", type=int, default=None)
    b.add_argument("--out", required=True)
    b.add_argument("--render_only", action="store_true", help="re-render --out's table (residual iterations "
                   "from --comparison_out's run.json, written after each comparison fold)")
    b.add_argument("--comparison_out", default=None, help="compare's --out (for the residual block's Stage II "
                   "iterations in its run.json)")
    b.set_defaults(func=prompt_blocks)
    w = sub.add_parser("budget_sweep", help="the time-budget rule's sweep table from compare --time_budget outputs",
                       description=budget_sweep.__doc__)
    w.add_argument("outs", nargs="+", help="--out folders of compare --time_budget runs")
    w.add_argument("--work", default=None, help="the runs' --work folder (else the environment's folders)")
    w.add_argument("--md", default=None, help="also write the table to this file")
    w.set_defaults(func=lambda a: (set_env(Path(a.work)) if a.work else None, budget_sweep(a)))
    return p


def main(argv: list[str] | None = None, prog: str = "benchmarks/real_data.py") -> None:
    one_thread_default()  # one thread per run: before numpy / torch load (nothing above imports them)
    argv = sys.argv[1:] if argv is None else list(argv)
    a = build_parser(prog).parse_args(argv)
    a.command_line = f"python {prog} " + shlex.join(argv)  # recorded in run.json / prompt_blocks.json
    a.func(a)


if __name__ == "__main__":
    main()
