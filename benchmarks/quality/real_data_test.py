"""real_data.py test: the held-out test protocol (issue 32): every method trained ONCE on all training cases
(fold 'all') at the same CPU budget, then scored on a fixed, seeded sample of the dataset's test cases
(imagesTs/labelsTs, never used for training, tuning or any decision).

For every method (-tr) in turn: train it on fold 'all' with compare's budget (``--minutes`` CPU minutes on one
thread, DiffOSeg split between Stage I and Stage II by ``--stage1_fraction``; or ``--time_budget`` hours of a planned
configuration), predict the sampled test images into ``<model folder>/fold_all/test_predictions`` and score every
method with predictions, the trivial rows and the inter-rater row on the same cases against labelsTs
(real_data_test_table.py: mean ± standard error over the cases, DiffOSeg's paired GED differences). Written after
every method, so that a session cut mid-run keeps what finished:

    OUT/test_comparison.md            the tables, with the test split, the sample and the training above them
    OUT/test_comparison.csv           method, mode, metric, mean, se, num_cases
    OUT/test_per_case.csv             the per-case values behind it
    OUT/test_comparison.json          the provenance, the table and the paired differences
    OUT/test_learning_curves.md/.csv/.png   --curves: the learning-curve checkpoints scored on the same cases
    DIR/<Dataset>/<configuration>/test.csv, test_per_case.csv, test.json, test_curve.csv   --record DIR

Resumable: a trained stage is reused (an interrupted planned stage continues with --c; an interrupted --minutes
stage starts over, since the CPU clock of the earlier process is gone), complete predictions are reused, and a
method that --record holds is not trained again (its recorded rows join the table).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.lib.bench_lib import (PLANS, markdown_table, mean_and_se, plan_budget_configuration, set_env,
                                      train_with_budget)
from benchmarks.quality.real_data_compare import (DEFAULT_TRAINERS, add_budget_arguments, add_device_arguments,
                                                  budget_notes, check_budget_arguments, model_folder, predict_curve_points,
                                                  predict_fold, stage_minutes, trained_seconds)
from benchmarks.quality.real_data_records import (HELD_OUT_FILES, held_out_record, record_folder, record_held_out,
                                                  record_held_out_curve, revision, same_sample_or_exit,
                                                  with_other_methods)

if TYPE_CHECKING:  # pandas loads numpy: real_data.py sets one thread first
    import pandas as pd

    from diffoseg_auto.dataset.raw_dataset import RawDataset

TEST_IMAGES = "test_images"  # the sampled test images, linked into --work
CURVE_METRICS = ("GED", "Dice_soft", "Dice_rater_strict")


@dataclass
class HeldOutRun:
    """What every step of one invocation shares."""
    a: argparse.Namespace
    ds: RawDataset
    cases: list[str]  # the sampled test cases
    num_test_cases: int
    images: Path  # the sampled test images
    log: dict = field(default_factory=dict)  # method label -> its entry (training, prediction, provenance)
    curves: dict = field(default_factory=dict)  # method label -> its learning-curve rows on the sample


def add_test_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--dataset_id", type=int, required=True)
    p.add_argument("-c", "--configuration", required=True)
    p.add_argument("-tr", nargs="+", default=DEFAULT_TRAINERS, help="methods (default: DiffOSeg and the three baselines)")
    add_budget_arguments(p, "method")
    add_device_arguments(p)
    p.add_argument("--test_sample", type=int, default=300, metavar="N",
                   help="score a fixed sample of N test cases (all of them when there are fewer)")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed")
    p.add_argument("--out", required=True, help="folder for test_comparison.md/.csv/.json")
    p.add_argument("--work", default=None, help="point $diffoseg_raw/_preprocessed/_results into this folder")
    p.add_argument("--record", default=None, metavar="DIR",
                   help="also keep the scored rows and their provenance as DIR/<Dataset>/<configuration>/test.csv, "
                        "test_per_case.csv, test.json (runs of several sessions add up); a recorded method is not "
                        "trained again (unless --retrain)")
    p.add_argument("--num_samples", type=int, default=16, help="N per case (also of the trivial rows)")
    p.add_argument("--sampling_steps", type=int, default=None, help="DiffOSeg's reverse steps (default: the plans')")
    p.add_argument("--curves", action="store_true",
                   help="also predict and score the learning-curve checkpoints of fold 'all' on the same test cases")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation when predicting")
    p.add_argument("--retrain", action="store_true", help="train and predict again even where results exist")


# ---------------------------------------------------------------- one method

def train_all(a: argparse.Namespace, trainer: str, folder: Path) -> dict | None:
    """Train the stages of fold 'all' that have no final checkpoint (every stage with --retrain) at compare's
    budget; None when nothing was left to train."""
    from diffoseg_auto.results_layout import checkpoint_path

    planned = a.time_budget is not None
    stages = stage_minutes(trainer, a.minutes, None if planned else a.stage1_fraction)
    if not a.retrain:  # a finished stage is kept: a rerun trains only what an interruption left unfinished
        stages = tuple(0.0 if checkpoint_path(folder, "all", s).is_file() else m for s, m in zip((1, 2), stages))
    if all(m is not None and m <= 0 for m in stages):
        return None
    return train_with_budget(a.dataset_id, a.configuration, stages[0], stages[1], threads=1,
                             iterations_per_epoch=None if planned else a.iterations_per_epoch, fold="all",
                             trainer=trainer, budget_clock="cpu",
                             val_iterations=None if planned else a.val_iterations, resume=planned and not a.retrain)


def curve_rows(run: HeldOutRun, trainer: str, again: bool) -> list[dict]:
    """Each learning-curve checkpoint of fold 'all' (predicted into fold_all/test_learning_curve/<point>) scored
    in strict mode on the sampled cases: mean and standard error of CURVE_METRICS against the training compute up
    to it. A point's summary.json is reused when it holds exactly these cases (prediction replaces it)."""
    from diffoseg_auto.evaluation.evaluate_entrypoint import evaluate_folder
    from diffoseg_auto.evaluation.learning_curves import curve_points
    from diffoseg_auto.evaluation.method_comparison import method_label
    from diffoseg_auto.results_layout import SUMMARY, ts_learning_curve_folder
    from diffoseg_auto.utilities.file_ops import load_json

    a, rows = run.a, []
    folder = model_folder(a.dataset_id, trainer, a.configuration)
    predict_curve_points(a, trainer, "all", run.images, run.cases, again=again,
                         folder_of=lambda d, fold, checkpoint: ts_learning_curve_folder(d, checkpoint, fold))
    for p in curve_points(folder, "all"):
        pred = ts_learning_curve_folder(folder, p["checkpoint"])
        summary = load_json(pred / SUMMARY) if (pred / SUMMARY).is_file() else None
        if summary is None or sorted(c["case"] for c in summary["per_case"]) != sorted(run.cases):
            summary = evaluate_folder(run.ds.labels_folder("Ts"), pred, pred / SUMMARY, expected_cases=run.cases)
        row = {"method": method_label(trainer), **{k: p[k] for k in ("stage", "fraction", "epoch", "seconds")},
               "cases": summary["num_cases"]}
        for m in CURVE_METRICS:
            row[m], row[f"{m}_se"] = mean_and_se(summary, m)
        rows.append(row)
    return rows


def run_method(run: HeldOutRun, trainer: str) -> None:
    """Train (what is not trained), predict the sampled test images (unless complete) and, with --curves, the
    learning-curve points; the method's entry goes into run.log (an error too: a long run goes on)."""
    from diffoseg_auto.evaluation.method_comparison import method_label
    from diffoseg_auto.results_layout import ts_predictions_folder

    a, t0 = run.a, time.time()
    folder = model_folder(a.dataset_id, trainer, a.configuration)
    stages = stage_minutes(trainer, a.minutes, None if a.time_budget is not None else a.stage1_fraction)
    entry = run.log[method_label(trainer)] = {
        "trainer": trainer, "command": a.command_line, "revision": revision(), "date": datetime.date.today().isoformat(),
        "minutes": {"stage1": stages[0], "stage2": stages[1]}, "num_samples": a.num_samples,
        "sampling_steps": a.sampling_steps}
    try:
        training = train_all(a, trainer, folder)
        entry["training"] = training if training is not None else "reused"
        entry["trained"] = trained_seconds(folder, "all")
        entry["prediction"] = predict_fold(a, trainer, "all", run.images, run.cases, out=ts_predictions_folder(folder),
                                           again=training is not None)
        if a.curves:
            run.curves[method_label(trainer)] = curve_rows(run, trainer, again=training is not None)
    except Exception as e:  # one failing method must not stop a long background run; it is recorded
        entry["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    entry["wall_minutes"] = round((time.time() - t0) / 60, 2)
    print(f"{trainer}: {json.dumps(entry)}", flush=True)


# ---------------------------------------------------------------- the table

def predicted_methods(run: HeldOutRun) -> dict[str, list[Path]]:
    """Method label -> [its test_predictions folder] for every -tr method that predicted every sampled case."""
    from diffoseg_auto.evaluation.method_comparison import method_label
    from diffoseg_auto.results_layout import ts_predictions_folder

    out = {}
    for tr in run.a.tr:
        f = ts_predictions_folder(model_folder(run.a.dataset_id, tr, run.a.configuration))
        if all((f / "samples" / f"{c}.npz").is_file() for c in run.cases):
            out[method_label(tr)] = [f]
    return out


def sample_info(run: HeldOutRun) -> dict:
    """The sample and the settings every row shares (test.json, test_comparison.json)."""
    a, dj = run.a, run.ds.dataset_json
    info = {"dataset": run.ds.name, "configuration": a.configuration,
            "test_split": dj.get("test_split", "not stated in dataset.json (the dataset's imagesTs/labelsTs)"),
            "sample": {"seed": a.seed, "size_asked": a.test_sample, "num_test_cases": run.num_test_cases,
                       "cases": run.cases},
            "num_training_cases": len(run.ds.cases), "raters": run.ds.raters,
            "raters_are_slots": bool(dj.get("raters_are_slots")), "num_samples": a.num_samples,
            "sampling_steps": a.sampling_steps, "minutes_per_method": a.minutes, "time_budget_hours": a.time_budget,
            "stage1_fraction": None if a.time_budget is not None else a.stage1_fraction, "threads": 1,
            "budget_clock": "cpu"}
    if a.time_budget is not None:  # the planner's word on DiffOSeg's schedule, as planned for this run
        info["time_budget"] = {k: v for k, v in budget_notes(a.dataset_id, a.configuration).items() if k != "candidates"}
    return info


def context_lines(info: dict) -> dict:
    """The sentences above the table (held_out_markdown's ``context``)."""
    s = info["sample"]
    sample = (f"{len(s['cases'])} of the {s['num_test_cases']} test cases, drawn with seed {s['seed']} (numpy "
              "default_rng(seed).choice without replacement, sorted; diffoseg_auto/cli/fold_images.py sample_cases).")
    steps = f", {info['sampling_steps']} sampling steps" if info["sampling_steps"] else ""
    if info["time_budget_hours"] is not None:
        budget = (f"{info['time_budget_hours']:g} h per method on one CPU thread: DiffOSeg trains the schedule of "
                  f"the configuration planned for them on this CPU ({info['configuration']}), a baseline trains for "
                  "the same hours")
    else:
        budget = (f"{info['minutes_per_method']:g} CPU minutes per method on one thread (DiffOSeg: "
                  f"{info['stage1_fraction']:.0%} of them Stage I, the rest Stage II; a baseline: one stage)")
    training = (f"every method once on all {info['num_training_cases']} training cases (fold all), {budget}; "
                f"{info['num_samples']} samples per case{steps}.")
    return {**info, "sample": sample, "training": training}


def training_markdown(methods: dict[str, dict]) -> str:
    """Per method: the iterations reached per stage (when trained by the run that recorded it), the epochs' seconds
    of its final checkpoints, the run's wall time and provenance."""
    rows = []
    for label, e in methods.items():
        training = e.get("training") if isinstance(e.get("training"), dict) else {}
        trained = e.get("trained") or {}
        # iterations when the recording run trained the method, else the epochs of its final checkpoints
        its = [str(training[s]["iterations"]) if s in training else
               f"{trained[s]['epochs']} epochs" if s in trained else "" for s in ("stage1", "stage2")]
        seconds = sum(v.get("epoch_seconds", 0) for v in trained.values())
        budget = " / ".join("planned" if m is None else f"{m:.3g}" for m in (e.get("minutes") or {}).values())
        rows.append([label, budget, *its, f"{seconds / 60:.2f}", e.get("wall_minutes", ""), e.get("revision", ""),
                     e.get("date", ""), e.get("error", "")])
    return markdown_table(["method", "budget min (I / II)", "Stage I iterations", "Stage II iterations",
                           "training min (epochs)", "wall min (this run)", "revision", "date", "error"], rows)


def merged_rows(run: HeldOutRun) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """(per case, sample level) of this run's scoring, and the same with the recorded rows of the methods not
    predicted here, and the methods' provenance (recorded and this run's)."""
    import pandas as pd

    from benchmarks.quality.real_data_test_table import score_test_cases

    per_case, sample = score_test_cases(run.ds, predicted_methods(run), run.cases, run.a.num_samples)
    all_cases, all_sample, methods = per_case, sample, dict(run.log)
    if run.a.record:
        rec_cases, rec_sample, rec_info = held_out_record(Path(run.a.record), run.ds.name, run.a.configuration)
        here = set(per_case["method"])
        all_cases = pd.concat([rec_cases[~rec_cases["method"].isin(here)], per_case], ignore_index=True)
        all_sample = pd.concat([rec_sample[~rec_sample["method"].isin(here)], sample], ignore_index=True)
        methods = {**rec_info.get("methods", {}), **run.log}
    return per_case, sample, all_cases, all_sample, methods


def write_outputs(run: HeldOutRun) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score, merge with the record and write OUT/test_comparison.* (and the curves); returns this run's own
    (per case, sample level) rows, which --record keeps."""
    from diffoseg_auto.evaluation.method_comparison import method_label
    from diffoseg_auto.utilities.file_ops import atomic_write, atomic_write_text, save_json
    from benchmarks.quality.real_data_test_table import held_out_markdown, paired_differences, summary_table

    a, out = run.a, Path(run.a.out)
    per_case, sample, all_cases, all_sample, methods = merged_rows(run)
    info = sample_info(run)
    summary = summary_table(all_cases, all_sample, run.ds.name, a.configuration)
    paired = paired_differences(all_cases)
    labels = list(dict.fromkeys([method_label(t) for t in a.tr] + list(methods)))
    md = held_out_markdown(summary, paired, labels, context_lines(info))
    md += "\n## Training\n\n" + training_markdown({m: methods[m] for m in labels if m in methods}) + "\n"
    atomic_write(out / "test_comparison.csv", lambda p: summary.to_csv(p, index=False))
    atomic_write(out / "test_per_case.csv", lambda p: all_cases.to_csv(p, index=False, float_format="%.6g"))
    save_json({**info, "command": a.command_line, "methods": methods, "table": summary.to_dict("records"),
               "paired_differences": paired.to_dict("records")}, out / "test_comparison.json")
    atomic_write_text(out / "test_comparison.md", md)
    if a.curves:
        write_curves(run, out)
    return per_case, sample


def write_curves(run: HeldOutRun, out: Path) -> None:
    """OUT/test_learning_curves.csv/.md/.png: this run's points and the recorded points of the other methods."""
    import pandas as pd

    from diffoseg_auto.evaluation.learning_curves import plot_curves
    from diffoseg_auto.utilities.file_ops import atomic_write, atomic_write_text

    points = [r for rows in run.curves.values() for r in rows]
    curve = pd.DataFrame(points) if points else pd.DataFrame(columns=["method"])
    if run.a.record:
        folder = record_folder(Path(run.a.record), run.ds.name, run.a.configuration)
        curve = with_other_methods(folder / HELD_OUT_FILES[3], curve)
    if curve.empty:
        return
    curve = curve.sort_values(["method", "seconds"]).reset_index(drop=True)
    atomic_write(out / "test_learning_curves.csv", lambda p: curve.to_csv(p, index=False))
    cell = lambda v, se: "n/a" if not math.isfinite(v) else f"{v:.3f}" + (f" ± {se:.3f}" if math.isfinite(se) else "")
    cells = [[r.method, r.stage, f"{r.fraction:g}", f"{r.seconds:.0f}", r.cases,
              *(cell(getattr(r, m), getattr(r, m + "_se")) for m in CURVE_METRICS)] for r in curve.itertuples()]
    atomic_write_text(out / "test_learning_curves.md",
                      "Learning curves on the sampled test cases (strict; mean ± standard error over the cases):\n\n"
                      + markdown_table(["method", "stage", "fraction", "training s", "cases", *CURVE_METRICS],
                                       cells, left=2) + "\n")
    plot_curves(curve.rename(columns={f"{m}_se": f"{m}_std" for m in CURVE_METRICS}), out / "test_learning_curves.png",
                title=f"{run.ds.name} {run.a.configuration}: test sample of {len(run.cases)} cases")


def record(run: HeldOutRun, label: str, per_case: pd.DataFrame, sample: pd.DataFrame) -> None:
    """The method's rows and the reference rows of this run (not another method's, which that method's own run
    records), with the provenance, into --record."""
    import pandas as pd

    from diffoseg_auto.evaluation.method_comparison import method_label

    others = {method_label(t) for t in run.a.tr} - {label}
    keep = lambda t: t[~t["method"].isin(others)]
    record_held_out(Path(run.a.record), keep(per_case), keep(sample), sample_info(run), {label: run.log[label]})
    if label in run.curves:
        record_held_out_curve(Path(run.a.record), run.ds.name, run.a.configuration, pd.DataFrame(run.curves[label]))


# ---------------------------------------------------------------- the command

def start(a: argparse.Namespace) -> HeldOutRun:
    """Check the arguments, plan a time budget, draw and link the test sample."""
    check_budget_arguments(a)
    if a.test_sample < 1:
        a.parser.error("--test_sample must be at least 1")
    import torch

    torch.set_num_threads(1)
    from diffoseg_auto.cli.fold_images import link_test_images
    from diffoseg_auto.dataset.raw_dataset import open_raw_dataset

    Path(a.out).mkdir(parents=True, exist_ok=True)
    if a.work:
        set_env(Path(a.work))
    ds = open_raw_dataset(a.dataset_id)
    total = len(ds.cases_of("Ts"))
    if not total or not ds.labels_folder("Ts").is_dir():
        raise SystemExit(f"{ds.folder}: no test split (imagesTs and labelsTs/<rater>/); convert the dataset with "
                         "one (diffoseg_convert_lidc without --no_test_split) or add those folders")
    if a.time_budget is not None:
        a.configuration = plan_budget_configuration(a.dataset_id, a.configuration, a.time_budget, a.candidate,
                                                    a.min_stage1_iterations)
    # read before any file is written: a broken record fails first
    recorded = held_out_record(Path(a.record), ds.name, a.configuration)[2] if a.record else {}
    work = Path(a.work) if a.work else Path(a.out)
    cases = link_test_images(a.dataset_id, work / TEST_IMAGES, a.test_sample, a.seed)
    run = HeldOutRun(a, ds, cases, total, work / TEST_IMAGES)
    if a.record:  # before any training: a record of another sample cannot take this run's rows
        same_sample_or_exit(recorded, sample_info(run), record_folder(Path(a.record), ds.name, a.configuration))
    return run


def held_out_test(a: argparse.Namespace) -> None:
    from diffoseg_auto.evaluation.method_comparison import method_label

    run = start(a)
    recorded = set()
    if a.record and not a.retrain:
        recorded = set(held_out_record(Path(a.record), run.ds.name, a.configuration)[0]["method"])
    trainers = [t for t in a.tr if method_label(t) not in recorded]
    if len(trainers) < len(a.tr):
        print(f"{', '.join(t for t in a.tr if t not in trainers)}: recorded in {a.record}, reused (--retrain trains "
              "again)", flush=True)
    for trainer in trainers:  # scored and recorded per method: a session cut mid-run keeps what finished
        run_method(run, trainer)
        per_case, sample = write_outputs(run)
        if a.record and method_label(trainer) in set(per_case["method"]):
            record(run, method_label(trainer), per_case, sample)
    if not trainers:
        write_outputs(run)
    print((Path(a.out) / "test_comparison.md").read_text())
