"""What the benchmark tools share (speed.py, toy_proof.py, real_data.py): the environment, time-budgeted
training of a fold, the Stage I sweep over sampling steps, the prompt-block configurations, and Markdown tables.

Nothing here imports torch or the project at module level: speed.py's prediction worker imports this module
under an older revision's code (``PYTHONPATH``), and a tool sets its thread variables before numpy loads.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

# small cases: worker pools would cost more to start than the work they take over
IN_PROCESS = {"num_processes_preprocessing": 1, "num_processes_export": 1}
MIN_COMPONENT_PIXELS = 10
PLANS = "DiffOSegPlans"


def one_thread_default() -> None:
    """One BLAS/OpenMP thread unless the caller set one: call before numpy or torch is imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def set_env(work: Path) -> None:
    """Point the three diffoseg folders into ``work`` (the benchmark never touches the user's own)."""
    for var, sub in (("diffoseg_raw", "raw"), ("diffoseg_preprocessed", "preprocessed"), ("diffoseg_results", "results")):
        os.environ[var] = str(work / sub)


def markdown_table(header: list[str], rows: list[list], left: int = 1) -> str:
    """A Markdown table; the first ``left`` columns are left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * left + "---:|" * (len(header) - left)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- training

def train_with_budget(dataset_id: int, configuration: str, stage1_minutes: float | None, stage2_minutes: float | None,
                      threads: int = 1, iterations_per_epoch: int | None = 25, fold: int = 0,
                      trainer: str = "DiffOSegTrainer", budget_clock: str = "wall", val_iterations: int | None = 2,
                      resume: bool = False, device: str = "cpu", num_workers: int = 0) -> dict:
    """Stage I then Stage II of ``fold``, each stopped by ``--max_minutes`` on ``budget_clock`` (wall or this
    process's CPU time; a stage with 0 minutes is not trained: a single-stage baseline gets its whole budget as
    stage 1; None minutes: the configuration's own schedule, as a time-budget configuration plans it);
    ``resume``: continue a stage from its latest checkpoint (--c) instead of starting over; returns iterations
    reached per stage. ``threads`` applies on the CPU; ``num_workers``: augmentation workers (a GPU needs them)."""
    import torch

    from diffoseg_auto.training.run_training import run_training
    from diffoseg_auto.training.training_request import ScheduleOverrides, TimeBudget, TrainingRequest

    if device == "cpu":
        torch.set_num_threads(threads)
    reached = {}
    for stage, minutes in ((1, stage1_minutes), (2, stage2_minutes)):
        if minutes is not None and minutes <= 0:
            continue
        t0, c0 = time.time(), time.process_time()
        schedule = ScheduleOverrides(None if minutes is None else 1000, iterations_per_epoch, val_iterations)
        tr = run_training(TrainingRequest(dataset_id, configuration, fold, stage=stage, trainer=trainer, schedule=schedule,
                                          budget=TimeBudget(minutes, budget_clock), final_validation=False,
                                          num_workers=num_workers, device=device, overwrite=not resume,
                                          continue_training=resume))[0]
        reached[f"stage{stage}"] = {"epochs": tr.current_epoch, "iterations": tr.iterations_done,
                                    "batch_size": tr.batch_size, "seconds": round(time.time() - t0, 1),
                                    "cpu_seconds": round(time.process_time() - c0, 1)}
    return reached


def plan_budget_configuration(dataset_id: int, base: str, hours: float, candidate: str | None = None,
                              min_stage1_iterations: int | None = None) -> str:
    """Plan ``--time_budget`` hours from -c on this CPU (one thread, in-process augmentation, as these runs train),
    named after the chosen candidate so that a rerun, or another rule threshold choosing the same candidate,
    reuses its configuration, data and trained folds; returns its name. ``candidate`` 'F,D' (spacing factor,
    width divisor) forces one candidate whatever the rule says: a sweep over candidates, on tuning folds only."""
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from diffoseg_auto.utilities.file_ops import load_json, save_json
    from planners.plan_and_preprocess_entrypoints import preprocess
    from planners.budget_candidates import Candidate
    from planners.time_budget import (MIN_STAGE1_ITERATIONS, BudgetOptions, budget_summary, median_object_voxels_of,
                                      plan_time_budget)

    folder = preprocessed_root() / resolve_dataset_name(dataset_id)
    plans_file = folder / f"{PLANS}.json"
    plans, fingerprint = load_json(plans_file), load_json(folder / "dataset_fingerprint.json")
    force = Candidate(*(int(x) for x in candidate.split(","))) if candidate else None
    # a forced candidate's name is known before measuring: a rerun reuses its configuration without measuring again
    name = f"{base}_{hours:g}h_{force.key}" if force else None
    if name not in plans["configurations"]:
        options = BudgetOptions(num_workers=0, force=force,
                                min_stage1_iterations=min_stage1_iterations or MIN_STAGE1_ITERATIONS,
                                median_object_voxels=median_object_voxels_of(fingerprint),
                                num_cases=fingerprint.get("num_cases"))
        _, config = plan_time_budget(plans, base, hours, "cpu", options=options)
        name = f"{base}_{hours:g}h_{config['notes']['time_budget']['chosen']}"
    if name in plans["configurations"]:
        print(f"time budget: reusing configuration {name} (planned earlier)", flush=True)
    else:
        plans["configurations"][name] = config
        save_json(plans, plans_file)
        print(budget_summary(name, config), flush=True)
    preprocess(["-d", str(dataset_id), "-c", name, "-np", "2"])  # reuses complete preprocessed data
    return name


# ---------------------------------------------------------------- Stage I against sampling steps

def whole_mask_fraction(samples_folder: Path, min_pixels: int = MIN_COMPONENT_PIXELS) -> float:
    """Fraction of all sample foreground lying in connected components of >= min_pixels voxels."""
    import numpy as np
    from scipy import ndimage

    from diffoseg_auto.inference.export_prediction import unpack_samples

    in_big = total = 0
    for f in sorted(samples_folder.glob("*.npz")):
        with np.load(f) as z:
            samples = unpack_samples(dict(z))
        for s in samples:
            lab, _ = ndimage.label(s > 0)
            sizes = np.bincount(lab.ravel())[1:]
            total += int(sizes.sum())
            in_big += int(sizes[sizes >= min_pixels].sum())
    return in_big / total if total else float("nan")


def mean_and_se(summary: dict, key: str) -> tuple[float, float]:
    """Mean and standard error over the cases of an evaluation summary."""
    import numpy as np

    vals = np.array([float(c.get(key, np.nan)) for c in summary["per_case"]], dtype=float)
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else float("nan")


def predict_and_evaluate(dataset_id: int, configuration: str, fold: int, work: Path, labels: Path, pred: Path,
                         predict: bool = True, **options) -> dict:
    """The fold's held-out images predicted into ``pred`` with ``options`` (PredictionRequest fields; ``predict``
    False: score the predictions already there); their evaluation summary."""
    from diffoseg_auto.cli.fold_images import link_fold_images
    from diffoseg_auto.evaluation.evaluate_entrypoint import evaluate_folder
    from diffoseg_auto.dataset.splits_file import fold_validation_cases
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
    from diffoseg_auto.paths import preprocessed_dataset_folder
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    if predict:
        val_in = work / f"val_images_fold{fold}"
        held_out = link_fold_images(dataset_id, fold, val_in)
        predict_from_folder(val_in, pred, dataset_id, configuration, [fold], device="cpu", overwrite=True,
                            **IN_PROCESS, **options)
    else:
        held_out = fold_validation_cases(preprocessed_dataset_folder(resolve_dataset_name(dataset_id)), fold)
    return evaluate_folder(labels, pred, pred / "summary.json", expected_cases=held_out)


def sweep(dataset_id: int, configuration: str, fold: int, steps: list[int], work: Path, labels: Path,
          num_samples: int | None = None, mirroring: bool = False, tag: str = "", predict: bool = True) -> list[dict]:
    """One row per S: GED and Dice_soft (mean, standard error over cases) and the whole-mask fraction."""
    rows = []
    for s in steps:
        pred = work / f"stage1_S{s}{tag}"
        summary = predict_and_evaluate(dataset_id, configuration, fold, work, labels, pred, predict, save_samples=True,
                                       raters="none", sampling_steps=s, num_samples=num_samples,
                                       use_mirroring=mirroring)
        ged, ged_se = mean_and_se(summary, "GED")
        dsoft, dsoft_se = mean_and_se(summary, "Dice_soft")
        rows.append({"S": s, "mirroring": mirroring, "GED": ged, "GED_se": ged_se, "Dice_soft": dsoft,
                     "Dice_soft_se": dsoft_se, "whole_mask_fraction": whole_mask_fraction(pred / "samples"),
                     "cases": summary["num_cases"], "folder": str(pred)})
    return rows


def rater_samples_sweep(dataset_id: int, configuration: str, fold: int, counts: list[int], work: Path, labels: Path,
                        tag: str = "", predict: bool = True) -> list[dict]:
    """One row per number of samples per rater prompt (stage2.num_samples_per_rater): strict per-rater Dice (mean,
    standard error over cases). Stage I is sampled once per case only because prediction always writes it."""
    rows = []
    for n in counts:
        pred = work / f"stage2_R{n}{tag}"
        summary = predict_and_evaluate(dataset_id, configuration, fold, work, labels, pred, predict, raters="all",
                                       num_samples=1, rater_num_samples=n, use_mirroring=False)
        dice, se = mean_and_se(summary, "Dice_rater_strict")
        rows.append({"samples_per_rater": n, "Dice_rater_strict": dice, "Dice_rater_strict_se": se,
                     "cases": summary["num_cases"], "folder": str(pred)})
    return rows


def format_rater_samples_row(r: dict) -> str:
    return (f"samples per rater {r['samples_per_rater']:3d}  strict per-rater Dice {r['Dice_rater_strict']:.3f} "
            f"± {r['Dice_rater_strict_se']:.3f}")


def one_se_choices(steps_rows: list[dict], rater_rows: list[dict]) -> dict:
    """What the one-standard-error rule (planners/sampling_budget.py) picks on these curves."""
    from planners.sampling_budget import SECTIONS, smallest_within_one_se

    curves = {"sampling_steps": [r for r in steps_rows if not r.get("mirroring")], "samples_per_rater": rater_rows}
    return {name: smallest_within_one_se(rows, *SECTIONS[name]) for name, rows in curves.items() if rows}


def format_sweep_row(r: dict) -> str:
    return (f"S={r['S']:3d}{' +TTA' if r['mirroring'] else '     '}  GED {r['GED']:.3f} ± {r['GED_se']:.3f}  "
            f"Dice_soft {r['Dice_soft']:.3f} ± {r['Dice_soft_se']:.3f}  whole-mask fraction {r['whole_mask_fraction']:.3f}")


# ---------------------------------------------------------------- prompt blocks and the rater x prompt matrix

def add_prompt_block_configuration(plans_file: Path, block: str, base: str = "2d") -> str:
    """Configuration '<base>_<block>': inherits ``base`` (same data, same Stage I), only stage2.prompt_block differs."""
    from diffoseg_auto.utilities.file_ops import load_json, save_json

    plans = load_json(plans_file)
    name = f"{base}_{block}"
    plans["configurations"][name] = {"inherits_from": base, "stage2": {"prompt_block": block}}
    save_json(plans, plans_file)
    return name


def share_stage1(source: Path, target: Path, configuration: str, plans_file: Path | None = None) -> None:
    """Copy a Stage I checkpoint into ``configuration``'s fold folder. Stage I does not depend on the stage2
    section the configurations differ in, so the weights are the same run's; only the configuration
    name the trainer checks is relabelled. ``plans_file``: also store the current plans in the checkpoint
    (needed when ``configuration`` was added after Stage I was trained: prediction rebuilds the network
    from the checkpoint's plans)."""
    from diffoseg_auto.io.checkpoint_io import load_checkpoint, save_checkpoint
    from diffoseg_auto.utilities.file_ops import load_json

    ckpt = load_checkpoint(source)
    ckpt["init_args"]["configuration"] = configuration
    if plans_file is not None:
        ckpt["plans"] = load_json(plans_file)
    save_checkpoint(target, ckpt)


def matrix_margins(matrix) -> dict:
    """Per row: diagonal minus the row's best off-diagonal; and mean diagonal minus mean off-diagonal."""
    import numpy as np

    matrix = np.asarray(matrix, dtype=float)
    k = len(matrix)
    off = ~np.eye(k, dtype=bool)
    margins = [float(matrix[i, i] - np.nanmax(matrix[i][off[i]])) for i in range(k)]
    return {"row_margins": margins, "mean_diagonal": float(np.nanmean(np.diag(matrix))),
            "mean_off_diagonal": float(np.nanmean(matrix[off])),
            "diagonal_minus_off_diagonal": float(np.nanmean(np.diag(matrix)) - np.nanmean(matrix[off]))}


def rows_max_on_diagonal(matrix) -> list[bool | None]:
    """Per row of a rater x prompt Dice matrix: is its maximum on the diagonal (None: row has no value)?"""
    import numpy as np

    m = np.array(matrix, dtype=float)
    return [bool(np.nanargmax(m[k]) == k) if np.isfinite(m[k]).any() else None for k in range(len(m))]
