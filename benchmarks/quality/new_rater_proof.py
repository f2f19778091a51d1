"""A new expert from a few cases (diffoseg_add_rater), on the 2D toy dataset or on BU-BIL.

Toy (``--toy_seed S``): generates the toy dataset (raters dilate, erode, smooth, miss_small) with generator seed S,
then a copy WITHOUT the held-out rater (``--held_out``), trains Stage I and Stage II on that copy (fold 0), adds
the held-out rater from ``--shots`` of fold 0's training cases with diffoseg_add_rater, predicts fold 0's
held-out cases with every prompt and records each prompt's Dice to the held-out rater's masks (cases that rater
annotated). The proof: the new prompt beats every existing prompt by >= 0.02. Settings are chosen on seed 0 (the
tuning seed) and reported on fresh seeds.

BU-BIL (``--bubil``): the same on the BU-BIL cells with one person's masks (both tools) held out of Stage II
(Stage I and II train on the other 8 masks), the person's ``--held_out`` tool added from ``--shots`` cases; reports
the new prompt's strict Dice to that person's masks, the closest existing prompt's and the consensus', and the
predicted against the person's mean area.

    python benchmarks/quality/new_rater_proof.py --toy_seed 1 --held_out miss_small [--work /tmp/new_rater_s1]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if not __package__:  # run by path, not with -m: make the package `benchmarks` importable (benchmarks/README.md)
    sys.path.append(str(Path(__file__).resolve().parents[2]))

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

from benchmarks.lib.bench_lib import plan_budget_configuration, set_env

IN_PROCESS = {"num_processes_preprocessing": 1, "num_processes_export": 1}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * np.logical_and(a, b).sum() / s)


def without_rater(full: Path, out: Path, held_out: list[str]) -> list[str]:
    """A raw dataset that links ``full``'s images and every rater's labels except ``held_out``; returns its raters."""
    from diffoseg_auto.dataset.raw_dataset import load_dataset_json
    from diffoseg_auto.utilities.file_ops import save_json

    dj = load_dataset_json(full)
    raters = [r for r in dj["raters"] if r not in held_out]
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    if not (out / "imagesTr").exists():
        (out / "imagesTr").symlink_to((full / "imagesTr").resolve())
    for r in raters:
        if not (out / "labelsTr" / r).exists():
            (out / "labelsTr" / r).symlink_to((full / "labelsTr" / r).resolve())
    save_json({**dj, "raters": raters, "name": out.name}, out / "dataset.json")
    return raters


def shot_cases(dataset_id: int, fold: int, labels: Path, shots: int, images: Path, masks: Path,
               file_ending: str) -> list[str]:
    """The first ``shots`` training cases of ``fold`` that the held-out rater annotated, linked as add_rater input."""
    from diffoseg_auto.paths import preprocessed_dataset_folder
    from diffoseg_auto.training.splits import load_splits, select_fold
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    name = resolve_dataset_name(dataset_id)
    train, _ = select_fold(load_splits(preprocessed_dataset_folder(name)), fold, [], "splits_final.json")
    chosen = [c for c in sorted(train) if (labels / f"{c}{file_ending}").is_file()][:shots]
    for d in (images, masks):
        d.mkdir(parents=True, exist_ok=True)
    raw_images = Path(os.environ["diffoseg_raw"]) / name / "imagesTr"
    for c in chosen:
        for f in sorted(raw_images.glob(f"{c}_[0-9][0-9][0-9][0-9]{file_ending}")):
            if not (images / f.name).exists():
                (images / f.name).symlink_to(f.resolve())
        if not (masks / f"{c}{file_ending}").exists():
            (masks / f"{c}{file_ending}").symlink_to((labels / f"{c}{file_ending}").resolve())
    return chosen


def score_prompts(pred: Path, labels: Path, cases: list[str], file_ending: str) -> dict:
    """Each prompt's (and the consensus') mean Dice to the held-out rater's masks, and mean foreground areas."""
    from diffoseg_auto.io.image_io import read_seg

    scored = [c for c in cases if (labels / f"{c}{file_ending}").is_file()]
    refs = {c: read_seg(labels / f"{c}{file_ending}")[0] > 0 for c in scored}
    prompts = sorted(d.name for d in (pred / "raters").iterdir())
    out = {"cases": scored, "dice": {}, "area": {}}
    for p in prompts + ["consensus"]:
        folder = pred / "raters" / p if p != "consensus" else pred / "consensus"
        masks = {c: read_seg(folder / f"{c}{file_ending}")[0] > 0 for c in scored}
        out["dice"][p] = float(np.mean([dice(masks[c], refs[c]) for c in scored]))
        out["area"][p] = float(np.mean([masks[c].sum() for c in scored]))
    out["area"]["held_out_rater_masks"] = float(np.mean([refs[c].sum() for c in scored]))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--render", nargs="+", default=None, metavar="JSON",
                   help="only print the results table of earlier runs' new_rater_proof.json files")
    p.add_argument("--toy_seed", type=int, default=None, help="toy generator seed (0 = the tuning seed)")
    p.add_argument("--bubil", action="store_true", help="BU-BIL instead of the toy dataset")
    p.add_argument("--held_out", default=None,
                   help="toy: the held-out style (miss_small, erode, ...); BU-BIL: the held-out mask, e.g. Person3_Amira "
                        "(both of that person's masks are left out of Stage II)")
    p.add_argument("--work", default=None)
    p.add_argument("--shots", type=int, default=5, help="annotated cases of the new expert")
    p.add_argument("--cases", type=int, default=60, help="toy: cases generated")
    p.add_argument("--configuration", default="2d", help="BU-BIL: the configuration to train (e.g. a budget one)")
    p.add_argument("--time_budget", type=float, default=None,
                   help="hours for both stages: train a configuration planned from --configuration on this CPU "
                        "(its own schedule; --epochs, --stage2_epochs and --iterations do not apply)")
    p.add_argument("--candidate", default=None, metavar="SPACING_FACTOR,WIDTH_DIVISOR",
                   help="with --time_budget: plan this candidate whatever the rule picks")
    p.add_argument("--epochs", type=int, default=10, help="Stage I epochs")
    p.add_argument("--stage2_epochs", type=int, default=35, help="Stage II epochs")
    p.add_argument("--iterations", type=int, default=35, help="iterations per epoch")
    p.add_argument("--fit_iterations", type=int, default=None, help="diffoseg_add_rater --iterations (default its own)")
    p.add_argument("--num_samples", type=int, default=4)
    return p


def render(files: list[str]) -> str:
    """The results table: per run the new prompt's Dice to the held-out rater, the closest existing prompt's, the
    margin (the proof asks >= 0.02), the consensus' Dice, and the predicted against the rater's own mean area."""
    rows = ["| data | held out | new prompt Dice | closest existing prompt | its Dice | margin | consensus Dice | "
            "area: new prompt / rater's masks |", "|---|---|---:|---|---:|---:|---:|---:|"]
    for f in files:
        r = json.loads(Path(f).read_text())
        area = r["scores"]["area"]
        tag = r["dataset"] + (" (tuning seed)" if r.get("tuning_seed") else "")
        name = next(k for k in r["scores"]["dice"] if k.endswith(r["held_out"]) or k == r["held_out"])
        rows.append(f"| {tag} | {name} | {r['new_prompt_dice']:.3f} | {r['closest_existing_prompt']} | "
                    f"{r['closest_existing_dice']:.3f} | {r['margin']:+.3f} | {r['consensus_dice']:.3f} | "
                    f"{area[name]:.0f} / {area['held_out_rater_masks']:.0f} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    p = build_parser()
    a = p.parse_args()
    if a.render:
        print(render(a.render))
        return
    if (a.toy_seed is None) == (not a.bubil) or a.held_out is None:
        p.error("give --held_out and --toy_seed S or --bubil")
    work = Path(a.work or (f"/tmp/new_rater_toy_s{a.toy_seed}_{a.held_out}" if not a.bubil else
                           f"/tmp/new_rater_bubil_{a.held_out}"))
    set_env(work)
    from diffoseg_auto.cli.fold_images import link_fold_images
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
    from diffoseg_auto.results_layout import checkpoint_path, trainer_folder
    from diffoseg_auto.training.add_rater import DEFAULT_ITERATIONS, AddRaterRequest, add_rater
    from diffoseg_auto.training.run_training import run_training
    from diffoseg_auto.training.training_request import ScheduleOverrides, TrainingRequest
    from planners.plan_and_preprocess_entrypoints import plan_and_preprocess

    t0 = time.time()
    if a.bubil:
        from dataset_conversion.convert_bubil import convert_bubil

        full, ending, did = work / "raw" / "Dataset907_BUBILFull", ".png", 908
        if not full.exists():
            convert_bubil(Path(__file__).resolve().parents[3] / "shared/data/bubil_cells/BU-BIL_Dataset1",
                          907, name="BUBILFull", overwrite=True)
        person = a.held_out.rsplit("_", 1)[0]
        from diffoseg_auto.dataset.raw_dataset import load_dataset_json

        held = [r for r in load_dataset_json(full)["raters"] if r.startswith(person + "_")]
        name = "Dataset908_BUBILWithout"
    else:
        from dataset_conversion.generate_toy_dataset import generate_toy_dataset

        full, ending, did = work / "raw" / "Dataset905_ToyFull", ".nii.gz", 906
        if not full.exists():
            generate_toy_dataset(full, dim=2, num_cases=a.cases, num_raters=4, seed=a.toy_seed)
        from diffoseg_auto.dataset.raw_dataset import load_dataset_json

        held = [r for r in load_dataset_json(full)["raters"] if r == a.held_out or r.endswith("_" + a.held_out)]
        name = "Dataset906_ToyWithout"
    if len(held) != (1 if not a.bubil else 2):
        raise SystemExit(f"--held_out {a.held_out}: matches raters {held} of {full}; name one rater (a style of the toy, "
                         "or Person<N>_<tool> of BU-BIL)")
    new_name = held[0] if not a.bubil else a.held_out
    raters = without_rater(full, work / "raw" / name, held)
    plans_file = work / "preprocessed" / name / "DiffOSegPlans.json"
    if not plans_file.is_file():
        plan_and_preprocess(["-d", str(did), "-c", "2d", "-np", "2"] + (["--no_pp"] if a.time_budget else []))
    if a.time_budget:  # a configuration planned for the hours on this CPU; it brings its own schedule
        a.configuration = plan_budget_configuration(did, a.configuration, a.time_budget, a.candidate)
    schedule = ({} if a.time_budget else
                {1: ScheduleOverrides(num_epochs=a.epochs, iterations_per_epoch=a.iterations),
                 2: ScheduleOverrides(num_epochs=a.stage2_epochs, iterations_per_epoch=a.iterations)})
    folder = trainer_folder(name, "DiffOSegTrainer", "DiffOSegPlans", a.configuration)
    for stage in (1, 2):
        if not checkpoint_path(folder, 0, stage).is_file():  # --c: an interrupted stage continues
            run_training(TrainingRequest(did, a.configuration, 0, stage=stage, final_validation=False, device="cpu",
                                         continue_training=True, num_workers=0,
                                         schedule=schedule.get(stage, ScheduleOverrides())))
    train_seconds = round(time.time() - t0, 1)
    labels = full / "labelsTr" / new_name
    shots = shot_cases(did, 0, labels, a.shots, work / "new_images", work / "new_masks", ending)
    added = (folder / "fold_0" / "raters.json").is_file()
    t1 = time.time()
    if not added:
        add_rater(AddRaterRequest(did, a.configuration, 0, new_name, work / "new_images", work / "new_masks",
                                  iterations=a.fit_iterations or DEFAULT_ITERATIONS, device="cpu"))
    fit_seconds = round(time.time() - t1, 1)
    val = work / "val_images"
    cases = link_fold_images(did, 0, val)
    pred = work / "pred"
    predict_from_folder(val, pred, did, a.configuration, [0], raters="all", num_samples=a.num_samples, device="cpu",
                        use_mirroring=False, overwrite=True, **IN_PROCESS)
    scores = score_prompts(pred, labels, cases, ending)
    old = {r: scores["dice"][r] for r in raters}
    closest = max(old, key=old.get)
    result = {"dataset": "BU-BIL" if a.bubil else f"toy seed {a.toy_seed}", "tuning_seed": a.toy_seed == 0,
              "held_out": a.held_out, "left_out_of_stage2": held, "shots": shots,
              "fit_iterations": a.fit_iterations or DEFAULT_ITERATIONS, "scores": scores,
              "new_prompt_dice": scores["dice"][new_name], "closest_existing_prompt": closest,
              "closest_existing_dice": old[closest], "margin": scores["dice"][new_name] - old[closest],
              "consensus_dice": scores["dice"]["consensus"], "train_seconds": train_seconds,
              "fit_seconds": fit_seconds, "configuration": a.configuration, "time_budget_hours": a.time_budget}
    (work / "new_rater_proof.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "scores"}, indent=1))
    for r, v in scores["dice"].items():
        print(f"  prompt {r:<22} Dice to {new_name}: {v:.3f}   area {scores['area'][r]:.0f}")
    print(f"  {new_name}'s own masks: area {scores['area']['held_out_rater_masks']:.0f}")


if __name__ == "__main__":
    main()
