"""real_data.py prompt_blocks: the paper's Stage II prompt block against the default from the same Stage I."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.lib.bench_lib import (PLANS, add_prompt_block_configuration, markdown_table, matrix_margins, set_env,
                                      share_stage1, train_with_budget)


from benchmarks.quality.real_data_compare import TRAINER


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
        summary = evaluate_folder(ds.folder / "labelsTr", folder, folder / "summary_blocks.json", expected_cases=cases)
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
