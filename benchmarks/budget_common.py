"""Shared steps of the real-data budget benchmarks (LIDC, BU-BIL, method comparison): environment,
time-budgeted training of a fold, prediction of the fold's validation cases and their evaluation."""
from __future__ import annotations

import os
import time
from pathlib import Path

HEADLINE = ["GED", "Dice_soft", "Dice_match", "Dice_max", "Dice_rater_strict", "Dice_rater_dpersona",
            "Dice_consensus_majority"]


def set_env(work: Path) -> None:
    """Point the three diffoseg folders into ``work`` (the benchmark never touches the user's own)."""
    for var, sub in (("diffoseg_raw", "raw"), ("diffoseg_preprocessed", "preprocessed"), ("diffoseg_results", "results")):
        os.environ[var] = str(work / sub)


def train_with_budget(dataset_id: int, configuration: str, stage1_minutes: float | None, stage2_minutes: float | None,
                      threads: int = 1, iterations_per_epoch: int | None = 25, fold: int = 0,
                      trainer: str = "DiffOSegTrainer", budget_clock: str = "wall", val_iterations: int | None = 2,
                      resume: bool = False) -> dict:
    """Stage I then Stage II of ``fold``, each stopped by ``--max_minutes`` on ``budget_clock`` (wall or this
    process's CPU time; a stage with 0 minutes is not trained: a single-stage baseline gets its whole budget as
    stage 1; None minutes: the configuration's own schedule, as a time-budget configuration plans it);
    ``resume``: continue a stage from its latest checkpoint (--c) instead of starting over; returns iterations
    reached per stage."""
    import torch

    from diffoseg_auto.training.run_training import run_training

    torch.set_num_threads(threads)
    reached = {}
    for stage, minutes in ((1, stage1_minutes), (2, stage2_minutes)):
        if minutes is not None and minutes <= 0:
            continue
        t0, c0 = time.time(), time.process_time()
        tr = run_training(dataset_id, configuration, fold, str(stage), trainer=trainer, num_workers=0, device="cpu",
                          max_minutes=minutes, skip_final_validation=True,
                          num_epochs=None if minutes is None else 1000,
                          iterations_per_epoch=iterations_per_epoch, val_iterations=val_iterations,
                          overwrite=not resume, continue_training=resume, budget_clock=budget_clock)[0]
        reached[f"stage{stage}"] = {"epochs": tr.current_epoch, "iterations": tr.current_epoch * tr.iterations_per_epoch,
                                    "batch_size": tr.batch_size, "seconds": round(time.time() - t0, 1),
                                    "cpu_seconds": round(time.process_time() - c0, 1)}
    return reached


def predict_and_evaluate(dataset_id: int, configuration: str, work: Path, tag: str, steps: int | None,
                         num_samples: int, cases_folder: Path, raters: str | None = None, threads: int = 2,
                         rater_num_samples: int | None = None) -> dict:
    """Predict ``cases_folder`` into work/pred_<tag>, evaluate (strict and D-Persona modes), time it."""
    import torch

    from diffoseg_auto.evaluation.evaluate_entrypoint import evaluate_folder
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
    from diffoseg_auto.paths import raw_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    torch.set_num_threads(threads)
    out = work / f"pred_{tag}"
    t0 = time.time()
    cases = predict_from_folder(cases_folder, out, dataset_id, configuration, [0], num_samples=num_samples,
                                sampling_steps=steps, save_samples=True, device="cpu", use_mirroring=False, raters=raters,
                                rater_num_samples=rater_num_samples, num_processes_preprocessing=1,
                                num_processes_export=1, overwrite=True)
    seconds = time.time() - t0
    labels = raw_root() / resolve_dataset_name(dataset_id) / "labelsTr"
    s = evaluate_folder(labels, out, out / "summary.json")
    sd = evaluate_folder(labels, out, out / "summary_dpersona.json", mode="dpersona")
    m = {k: s["metrics"].get(k) for k in HEADLINE}
    m["GED_dpersona_mode"] = sd["metrics"].get("GED")
    return {"metrics": m, "seconds_per_image": round(seconds / len(cases), 2), "sampling_steps": steps,
            "num_samples": num_samples, "cases": len(cases), "rater_prompt_dice_matrix": s.get("rater_prompt_dice_matrix")}


def rows_max_on_diagonal(matrix) -> list[bool | None]:
    """Per row of a rater x prompt Dice matrix: is its maximum on the diagonal (None: row has no value)?"""
    import numpy as np

    m = np.array(matrix, dtype=float)
    return [bool(np.nanargmax(m[k]) == k) if np.isfinite(m[k]).any() else None for k in range(len(m))]
