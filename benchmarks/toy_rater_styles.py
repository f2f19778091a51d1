"""Does the method work on data nobody tuned on? The method issue's proof on the 2D toy dataset.

Generates the toy dataset with generator seed ``--seed`` (raters: dilate, erode, smooth,
miss-small; new cases per seed, same rater styles), plans, trains Stage I once and Stage II once
per prompt block (``--prompt_blocks``; each block gets its own configuration ``2d_<block>`` that
starts from the same Stage I weights), then on fold 0's held-out cases records:

- the rater x prompt Dice matrix per prompt block (rows: prompt, columns: rater labels), each
  row's margin (diagonal minus the row's best off-diagonal) and mean diagonal minus mean
  off-diagonal;
- Stage I GED / Dice_soft against the number of sampling steps S, with the standard error over
  cases;
- Stage I samples are whole masks or not: the fraction of sample foreground that lies in
  connected components of at least 10 pixels.

Prediction without mirroring TTA (its worth is measured separately, results.md). Evaluation discipline: settings are chosen on seed 0 (the tuning seed) and reported on fresh
seeds (documentation/benchmarking.md).

    python benchmarks/toy_rater_styles.py --seed 1 [--work /tmp/diffoseg_toy_s1] [--prompt_blocks residual paper]
        [--cases 60] [--epochs 10] [--stage2_epochs 35] [--iterations 35] [--steps 5 10 25 50]
        [--set training.x0_ce_weight=0.1 ...]

``--set`` edits the planned '2d' configuration (dotted keys, JSON values) before training, as a
user would edit the plans file.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from budget_common import rows_max_on_diagonal, set_env
from steps_sweep import IN_PROCESS, sweep

def edit_plans(plans_file: Path, configuration: str, edits: list[str]) -> None:
    """Apply KEY=VALUE edits (dotted keys into the configuration, JSON values) to a plans file."""
    if not edits:
        return
    from diffoseg_auto.utilities.file_ops import load_json, save_json

    plans = load_json(plans_file)
    for edit in edits:
        key, _, value = edit.partition("=")
        *parents, leaf = key.split(".")
        node = plans["configurations"][configuration]
        for k in parents:
            node = node[k]
        if leaf not in node:
            raise SystemExit(f"--set {edit}: '{key}' is not a field of configuration '{configuration}' in {plans_file}")
        node[leaf] = json.loads(value)
    save_json(plans, plans_file)


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


def matrix_margins(matrix: np.ndarray) -> dict:
    """Per row: diagonal minus the row's best off-diagonal; and mean diagonal minus mean off-diagonal."""
    k = len(matrix)
    off = ~np.eye(k, dtype=bool)
    margins = [float(matrix[i, i] - np.nanmax(matrix[i][off[i]])) for i in range(k)]
    return {"row_margins": margins, "mean_diagonal": float(np.nanmean(np.diag(matrix))),
            "mean_off_diagonal": float(np.nanmean(matrix[off])),
            "diagonal_minus_off_diagonal": float(np.nanmean(np.diag(matrix)) - np.nanmean(matrix[off]))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=None, help="default: /tmp/diffoseg_toy_s<seed>")
    p.add_argument("--seed", type=int, default=0, help="toy generator seed (0 = the tuning seed)")
    p.add_argument("--dataset_id", type=int, default=902)
    p.add_argument("--cases", type=int, default=60, help="cases generated; fold 0 holds out a fifth")
    p.add_argument("--epochs", type=int, default=10, help="Stage I epochs")
    p.add_argument("--stage2_epochs", type=int, default=35, help="Stage II epochs")
    p.add_argument("--iterations", type=int, default=35, help="iterations per epoch")
    p.add_argument("--prompt_blocks", nargs="*", default=["residual", "paper"], help="none: Stage I only")
    p.add_argument("--steps", nargs="+", type=int, default=[5, 10, 25, 50], help="Stage I sampling steps to sweep")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip_training", action="store_true", help="reuse a trained model in --work")
    p.add_argument("--reuse_stage1", action="store_true", help="reuse the dataset and Stage I in --work, train Stage II")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="plans edits for the '2d' configuration, e.g. training.x0_ce_weight=0.1")
    a = p.parse_args()

    work = Path(a.work or f"/tmp/diffoseg_toy_s{a.seed}")
    set_env(work)
    # imports after the environment is set: the modules read it at call time, but keep it obvious
    from dataset_conversion.generate_toy_dataset import generate_toy_dataset
    from diffoseg_auto.cli.fold_images import link_fold_images
    from diffoseg_auto.evaluation.evaluate_entrypoint import evaluate_folder
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
    from diffoseg_auto.io.image_io import read_seg
    from diffoseg_auto.results_layout import stage_folder, trainer_folder
    from diffoseg_auto.training.run_training import run_training
    from planners.plan_and_preprocess_entrypoints import plan_and_preprocess

    name = f"Dataset{a.dataset_id:03d}_Toy2D"
    raw = work / "raw" / name
    plans_file = work / "preprocessed" / name / "DiffOSegPlans.json"
    configs = {block: f"2d_{block}" for block in a.prompt_blocks}
    t0 = time.time()
    timings = {}
    if not a.skip_training:
        if not a.reuse_stage1:
            generate_toy_dataset(raw, dim=2, num_cases=a.cases, num_raters=4, seed=a.seed)
            plan_and_preprocess(["-d", str(a.dataset_id), "-c", "2d", "-np", "2"])
            edit_plans(plans_file, "2d", a.set)
            for block in a.prompt_blocks:
                add_prompt_block_configuration(plans_file, block)
            run_training(a.dataset_id, "2d", 0, "1", num_epochs=a.epochs, iterations_per_epoch=a.iterations,
                         device=a.device, skip_final_validation=True, overwrite=True)
            timings["stage1_seconds"] = round(time.time() - t0, 1)
        stage1 = stage_folder(trainer_folder(name, "DiffOSegTrainer", "DiffOSegPlans", "2d"), 0, 1) / "checkpoint_final.pth"
        for block, cfg in configs.items():
            t1 = time.time()
            target = stage_folder(trainer_folder(name, "DiffOSegTrainer", "DiffOSegPlans", cfg), 0, 1)
            shutil.rmtree(target.parent, ignore_errors=True)
            share_stage1(stage1, target / "checkpoint_final.pth", cfg)  # the same Stage I weights for every block
            run_training(a.dataset_id, cfg, 0, "2", num_epochs=a.stage2_epochs, iterations_per_epoch=a.iterations,
                         device=a.device, skip_final_validation=True, overwrite=True)
            timings[f"stage2_{block}_seconds"] = round(time.time() - t1, 1)
    val_in = work / "val_images"
    cases = link_fold_images(a.dataset_id, 0, val_in)
    raters = json.loads((raw / "dataset.json").read_text())["raters"]
    # Stage I: GED / Dice_soft against sampling steps, and whether the samples are whole masks
    steps_table = sweep(a.dataset_id, "2d", 0, a.steps, work, raw / "labelsTr")

    # Stage II: the rater x prompt matrix per prompt block
    blocks = {}
    for block, cfg in configs.items():
        pred = work / f"stage2_{block}"
        predict_from_folder(val_in, pred, a.dataset_id, cfg, [0], device=a.device, num_samples=4, use_mirroring=False,
                            overwrite=True, **IN_PROCESS)
        summary = evaluate_folder(raw / "labelsTr", pred, pred / "summary.json")
        matrix = np.array(summary["rater_prompt_dice_matrix"], dtype=float)
        area = {r: float(np.mean([read_seg(pred / "raters" / r / f"{c}.nii.gz")[0].astype(bool).sum() for c in cases]))
                for r in raters}
        blocks[block] = {"rater_prompt_dice_matrix": matrix.tolist(), "row_max_on_diagonal": rows_max_on_diagonal(matrix),
                         **matrix_margins(matrix), "mean_predicted_foreground_pixels": area,
                         "strict_per_rater_dice": summary["metrics"].get("Dice_rater_strict")}
    result = {"seed": a.seed, "tuning_seed": a.seed == 0, "plans_edits": a.set, "stage1_epochs": a.epochs,
              "stage2_epochs": a.stage2_epochs, "iterations_per_epoch": a.iterations, "cases": cases, "raters": raters,
              "stage1_steps": steps_table, "prompt_blocks": blocks, **timings,
              "total_seconds": round(time.time() - t0, 1)}
    out = work / "toy_rater_styles.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"seed {a.seed}{' (tuning seed)' if a.seed == 0 else ''}: Stage I against sampling steps")
    for r in steps_table:
        print(f"  S={r['S']:3d}  GED {r['GED']:.3f} ± {r['GED_se']:.3f}  Dice_soft {r['Dice_soft']:.3f} ± {r['Dice_soft_se']:.3f}"
              f"  whole-mask fraction {r['whole_mask_fraction']:.3f}")
    for block, b in blocks.items():
        print(f"prompt block '{block}': rater x prompt Dice (rows: prompt, columns: rater labels)")
        m = np.array(b["rater_prompt_dice_matrix"])
        for k, r in enumerate(raters):
            print(f"  {r[:15]:<15} " + " ".join(f"{v:7.3f}" for v in m[k]) + f"   margin {b['row_margins'][k]:+.3f}")
        print(f"  diagonal-dominant rows {sum(bool(d) for d in b['row_max_on_diagonal'])}/{len(raters)}; "
              f"mean diagonal - mean off-diagonal {b['diagonal_minus_off_diagonal']:+.3f}")
    print(f"written {out}")


if __name__ == "__main__":
    main()
