"""Does Stage II reproduce each rater's style? The training issue's proof on the 2D toy dataset.

Generates the toy dataset (raters: dilate, erode, smooth, miss-small), plans, trains both
stages on CPU, predicts fold 0's held-out cases with every rater's prompt, evaluates, and
prints the rater x prompt Dice matrix (rows: prompt, columns: rater labels) and each prompt's
predicted foreground area. Goals: every row's maximum is on the diagonal, and the dilating
rater's prompt predicts more foreground than the eroding rater's.

    python benchmarks/toy_rater_styles.py [--work /tmp/diffoseg_toy_styles] [--cases 60] [--epochs 10] [--stage2_epochs 35] [--iterations 35]
        [--set training.x0_ce_weight=0.1 ...] [--rater_num_samples 4]

``--set`` edits the planned '2d' configuration (dotted keys, JSON values) before training, as a
user would edit the plans file.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from budget_common import rows_max_on_diagonal


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/diffoseg_toy_styles")
    p.add_argument("--dataset_id", type=int, default=902)
    p.add_argument("--cases", type=int, default=60, help="cases generated; fold 0 holds out a fifth")
    p.add_argument("--epochs", type=int, default=10, help="Stage I epochs")
    p.add_argument("--stage2_epochs", type=int, default=35, help="Stage II epochs")
    p.add_argument("--iterations", type=int, default=35, help="iterations per epoch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip_training", action="store_true", help="reuse a trained model in --work")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="plans edits for the '2d' configuration, e.g. training.x0_ce_weight=0.1")
    p.add_argument("--rater_num_samples", type=int, default=4,
                   help="samples averaged per rater prompt (the prediction is their argmax, not one random draw)")
    a = p.parse_args()

    work = Path(a.work)
    for var, sub in (("diffoseg_raw", "raw"), ("diffoseg_preprocessed", "preprocessed"), ("diffoseg_results", "results")):
        os.environ[var] = str(work / sub)
    # imports after the environment is set: the modules read it at call time, but keep it obvious
    from dataset_conversion.generate_toy_dataset import generate_toy_dataset
    from diffoseg_auto.evaluation.evaluate_entrypoint import evaluate_folder
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
    from diffoseg_auto.io.image_io import read_seg
    from diffoseg_auto.training.run_training import run_training
    from diffoseg_auto.utilities.fold_images import link_fold_images
    from planners.plan_and_preprocess_entrypoints import plan_and_preprocess

    name = f"Dataset{a.dataset_id:03d}_Toy2D"
    raw = work / "raw" / name
    t0 = time.time()
    if not a.skip_training:
        generate_toy_dataset(raw, dim=2, num_cases=a.cases, num_raters=4, seed=0)
        plan_and_preprocess(["-d", str(a.dataset_id), "-c", "2d", "-np", "2"])
        edit_plans(work / "preprocessed" / name / "DiffOSegPlans.json", "2d", a.set)
        run_training(a.dataset_id, "2d", 0, "1", num_epochs=a.epochs, iterations_per_epoch=a.iterations,
                     device=a.device, overwrite=True)
        run_training(a.dataset_id, "2d", 0, "2", num_epochs=a.stage2_epochs, iterations_per_epoch=a.iterations,
                     device=a.device, overwrite=True)
    t_train = time.time() - t0
    val_in, pred = work / "val_images", work / "predictions"
    cases = link_fold_images(a.dataset_id, 0, val_in)
    predict_from_folder(val_in, pred, a.dataset_id, "2d", [0], device=a.device, save_samples=True,
                        rater_num_samples=a.rater_num_samples, overwrite=True)
    summary = evaluate_folder(raw / "labelsTr", pred, pred / "summary.json")
    raters = json.loads((raw / "dataset.json").read_text())["raters"]
    matrix = np.array(summary["rater_prompt_dice_matrix"], dtype=float)
    area = {r: float(np.mean([read_seg(pred / "raters" / r / f"{c}.nii.gz")[0].astype(bool).sum() for c in cases]))
            for r in raters}
    diag_dominant = rows_max_on_diagonal(matrix)
    result = {"plans_edits": a.set, "rater_num_samples": a.rater_num_samples, "cases": cases, "raters": raters, "rater_prompt_dice_matrix": matrix.tolist(),
              "row_max_on_diagonal": diag_dominant, "mean_predicted_foreground_pixels": area,
              "dilate_gt_erode": area[raters[0]] > area[raters[1]], "train_seconds": round(t_train, 1),
              "total_seconds": round(time.time() - t0, 1),
              "metrics": {k: v for k, v in summary["metrics"].items() if "/" not in k}}
    (work / "toy_rater_styles.json").write_text(json.dumps(result, indent=2))
    print("rater x prompt Dice (rows: prompt, columns: rater labels)")
    print("prompt \\ labels " + " ".join(f"{r[:14]:>14}" for r in raters))
    for k, r in enumerate(raters):
        print(f"{r[:15]:<15} " + " ".join(f"{v:14.3f}" for v in matrix[k]) + ("   <- max on diagonal" if diag_dominant[k] else ""))
    print("mean predicted foreground (pixels): " + ", ".join(f"{r}: {v:.1f}" for r, v in area.items()))
    print(f"diagonal-dominant rows: {sum(bool(d) for d in diag_dominant)}/{len(raters)}; dilate > erode: {result['dilate_gt_erode']}; "
          f"training {t_train / 60:.1f} min; written {work / 'toy_rater_styles.json'}")


if __name__ == "__main__":
    main()
