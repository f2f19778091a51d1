"""The rater-style proof on the 2D toy dataset: does Stage II reproduce each rater's style on data nobody tuned on?

    python benchmarks/quality/toy_proof.py run --seed 1 --work /tmp/toy1       # generate, plan, train, predict, score
    python benchmarks/quality/toy_proof.py render /tmp/toy1/toy_rater_styles.json /tmp/toy2/toy_rater_styles.json

``run`` generates the toy dataset with generator seed ``--seed`` (raters: dilate, erode, smooth, miss-small; new
cases per seed, same rater styles), plans, trains Stage I once and Stage II once per prompt block
(``--prompt_blocks``; each block gets its own configuration ``2d_<block>`` that starts from the same Stage I
weights), then on fold 0's held-out cases records:

- the rater x prompt Dice matrix per prompt block (rows: prompt, columns: rater labels), each row's margin
  (diagonal minus the row's best off-diagonal) and mean diagonal minus mean off-diagonal;
- Stage I GED / Dice_soft against the number of sampling steps S, with the standard error over cases;
- strict per-rater Dice against the samples per rater prompt (``--samples_per_rater``), and what the one-SE rule
  picks on both curves (their tables: ``benchmarks/quality/sampling_evidence.py``);
- Stage I samples are whole masks or not: the fraction of sample foreground that lies in connected components
  of at least 10 pixels.

Prediction without mirroring TTA. Evaluation discipline: settings are chosen on seed 0 (the tuning seed) and
reported on fresh seeds (documentation/benchmarking.md). ``--set`` edits the planned '2d' configuration (dotted
keys, JSON values) before training, as a user would edit the plans file. ``render`` prints the Markdown tables
of results.md from the JSON files of ``run``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

if not __package__:  # run by path, not with -m: make the package `benchmarks` importable (benchmarks/README.md)
    sys.path.append(str(Path(__file__).resolve().parents[2]))

from benchmarks.lib.bench_lib import (IN_PROCESS, add_prompt_block_configuration, format_rater_samples_row,
                                      format_sweep_row, markdown_table, matrix_margins, one_se_choices,
                                      rater_samples_sweep, rows_max_on_diagonal, set_env, share_stage1, sweep)


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


def run(a: argparse.Namespace) -> None:
    import numpy as np

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
    from diffoseg_auto.training.training_request import ScheduleOverrides, TrainingRequest
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
            run_training(TrainingRequest(a.dataset_id, "2d", 0, stage="1",
                                         schedule=ScheduleOverrides(a.epochs, a.iterations),
                                         final_validation=False, device=a.device, overwrite=True))
            timings["stage1_seconds"] = round(time.time() - t0, 1)
        stage1 = stage_folder(trainer_folder(name, "DiffOSegTrainer", "DiffOSegPlans", "2d"), 0, 1) / "checkpoint_final.pth"
        for block, cfg in configs.items():
            t1 = time.time()
            target = stage_folder(trainer_folder(name, "DiffOSegTrainer", "DiffOSegPlans", cfg), 0, 1)
            shutil.rmtree(target.parent, ignore_errors=True)
            share_stage1(stage1, target / "checkpoint_final.pth", cfg)  # the same Stage I weights for every block
            run_training(TrainingRequest(a.dataset_id, cfg, 0, stage="2",
                                         schedule=ScheduleOverrides(a.stage2_epochs, a.iterations),
                                         final_validation=False, device=a.device, overwrite=True))
            timings[f"stage2_{block}_seconds"] = round(time.time() - t1, 1)
    val_in = work / "val_images"
    cases = link_fold_images(a.dataset_id, 0, val_in)
    raters = json.loads((raw / "dataset.json").read_text())["raters"]
    # Stage I: GED / Dice_soft against sampling steps, and whether the samples are whole masks
    steps_table = sweep(a.dataset_id, "2d", 0, a.steps, work, raw / "labelsTr")

    # Stage II: strict per-rater Dice against the samples per rater prompt, with the first prompt block
    rater_table = (rater_samples_sweep(a.dataset_id, next(iter(configs.values())), 0, a.samples_per_rater, work,
                                       raw / "labelsTr") if configs and a.samples_per_rater else [])
    choices = one_se_choices(steps_table, rater_table)

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
              "stage1_steps": steps_table, "stage2_samples_per_rater": rater_table,
              "one_se_choices": choices, "prompt_blocks": blocks, **timings,
              "total_seconds": round(time.time() - t0, 1)}
    out = work / "toy_rater_styles.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"seed {a.seed}{' (tuning seed)' if a.seed == 0 else ''}: Stage I against sampling steps")
    for r in steps_table:
        print("  " + format_sweep_row(r))
    for r in rater_table:
        print("  " + format_rater_samples_row(r))
    print(f"one-standard-error rule picks: {choices}")
    for block, b in blocks.items():
        print(f"prompt block '{block}': rater x prompt Dice (rows: prompt, columns: rater labels)")
        m = np.array(b["rater_prompt_dice_matrix"])
        for k, r in enumerate(raters):
            print(f"  {r[:15]:<15} " + " ".join(f"{v:7.3f}" for v in m[k]) + f"   margin {b['row_margins'][k]:+.3f}")
        print(f"  diagonal-dominant rows {sum(bool(d) for d in b['row_max_on_diagonal'])}/{len(raters)}; "
              f"mean diagonal - mean off-diagonal {b['diagonal_minus_off_diagonal']:+.3f}")
    print(f"written {out}")


def render(results: list[dict]) -> str:
    """The Markdown tables of results.md from the JSON files of ``run``."""
    steps = [[f"{r['seed']}{' (tuning)' if r['tuning_seed'] else ''}", row["S"], f"{row['GED']:.3f} ± {row['GED_se']:.3f}",
              f"{row['Dice_soft']:.3f} ± {row['Dice_soft_se']:.3f}", f"{row['whole_mask_fraction']:.3f}"]
             for r in results for row in r["stage1_steps"]]
    lines = ["### Stage I against sampling steps S (mean ± standard error over the held-out cases)", "",
             markdown_table(["seed", "S", "GED", "Dice_soft", "whole-mask fraction"], steps), "",
             "### Rater x prompt Dice per prompt block (rows: prompt, columns: rater labels)", ""]
    for r in results:
        raters = r["raters"]
        for block, b in r["prompt_blocks"].items():
            dominant = sum(bool(d) for d in b["row_max_on_diagonal"])
            rows = [[name, *(f"**{v:.3f}**" if j == k else f"{v:.3f}" for j, v in enumerate(b["rater_prompt_dice_matrix"][k])),
                     f"{b['row_margins'][k]:+.3f}", f"{b['mean_predicted_foreground_pixels'][name]:.0f}"]
                    for k, name in enumerate(raters)]
            lines += [f"Seed {r['seed']}, prompt block `{block}`: {dominant}/{len(raters)} rows diagonal-dominant, "
                      f"mean diagonal {b['mean_diagonal']:.3f} - mean off-diagonal {b['mean_off_diagonal']:.3f} = "
                      f"{b['diagonal_minus_off_diagonal']:+.3f}; strict per-rater Dice {b['strict_per_rater_dice']:.3f}", "",
                      markdown_table(["prompt \\ labels", *raters, "row margin", "mean foreground px"], rows), ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/quality/toy_proof.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="generate, plan, train both stages, predict fold 0 and score it",
                       description="Generate, plan, train Stage I and Stage II per prompt block, predict fold 0's "
                                   "held-out cases and write <work>/toy_rater_styles.json.")
    r.add_argument("--work", default=None, help="default: /tmp/diffoseg_toy_s<seed>")
    r.add_argument("--seed", type=int, default=0, help="toy generator seed (0 = the tuning seed)")
    r.add_argument("--dataset_id", type=int, default=902)
    r.add_argument("--cases", type=int, default=60, help="cases generated; fold 0 holds out a fifth")
    r.add_argument("--epochs", type=int, default=10, help="Stage I epochs")
    r.add_argument("--stage2_epochs", type=int, default=35, help="Stage II epochs")
    r.add_argument("--iterations", type=int, default=35, help="iterations per epoch")
    r.add_argument("--prompt_blocks", nargs="*", default=["residual", "paper"], help="none: Stage I only")
    r.add_argument("--steps", nargs="+", type=int, default=[5, 10, 25, 50], help="Stage I sampling steps to sweep")
    r.add_argument("--samples_per_rater", nargs="*", type=int, default=[1, 2, 4, 8],
                   help="Stage II samples per rater prompt to sweep (first prompt block; none: skip)")
    r.add_argument("--device", default="cpu")
    r.add_argument("--skip_training", action="store_true", help="reuse a trained model in --work")
    r.add_argument("--reuse_stage1", action="store_true", help="reuse the dataset and Stage I in --work, train Stage II")
    r.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="plans edits for the '2d' configuration, e.g. training.x0_ce_weight=0.1")
    r.set_defaults(func=run)
    d = sub.add_parser("render", help="the Markdown tables of results.md from toy_rater_styles.json files",
                       description="Print the Markdown tables of results.md from the JSON files of `run`.")
    d.add_argument("json_files", nargs="+", type=Path)
    d.set_defaults(func=lambda a: print(render([json.loads(f.read_text()) for f in a.json_files])))
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    a.func(a)


if __name__ == "__main__":
    main()
