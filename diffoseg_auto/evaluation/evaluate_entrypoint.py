"""``diffoseg_evaluate``: score a prediction folder against a multi-rater labelsTr folder."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import pandas as pd

from diffoseg_auto.configuration import default_num_processes
from diffoseg_auto.dataset.splits_file import fold_validation_cases
from diffoseg_auto.errors import InvalidArgumentError
from diffoseg_auto.evaluation.calibration import RELIABILITY_KEY
from diffoseg_auto.evaluation.completeness import EvaluationIncompleteError, find_missing
from diffoseg_auto.evaluation.metrics import MODES, CaseScoring, evaluate_case, summarize
from diffoseg_auto.evaluation.prediction_folder import (EvaluationInputError, list_predicted_cases, load_prediction,
                                                        load_reference, reference_info)
from diffoseg_auto.paths import preprocessed_dataset_folder
from diffoseg_auto.utilities.command_runner import run_command
from diffoseg_auto.utilities.file_ops import atomic_write, save_json
from diffoseg_auto.utilities.worker_lifeline import watch_parent

logger = logging.getLogger(__name__)


def _evaluate_one(job: tuple) -> dict:
    """One case; a top-level function so spawned workers can import it."""
    ref_folder, pred_folder, raters, case, ending, num_classes, mode = job
    labels, mask, ref_props, ref_file = load_reference(ref_folder, raters, case, ending)
    pred = load_prediction(pred_folder, raters, case, ending, ref_props, ref_file)
    res = evaluate_case(pred.samples, labels, mask, num_classes, rater_predictions=pred.rater_predictions,
                        consensus=pred.consensus, foreground_probability=pred.foreground_probability,
                        scoring=CaseScoring(mode, calibration=True))
    return {"case": case, "num_raters_available": int(mask.sum()), **res}


def _infer_num_classes(ref_folder: Path, raters: list[str], cases: list[str], ending: str) -> int:
    top = 1
    for case in cases:
        labels, _, _, _ = load_reference(ref_folder, raters, case, ending)
        top = max(top, int(labels.max()))
    return top + 1


def per_case_table(per_case: list[dict]) -> pd.DataFrame:
    """One row per case, one column per scalar metric (the rater x prompt matrix and reliability bins are left out)."""
    rows = [{k: v for k, v in d.items() if k not in ("rater_prompt_dice_matrix", RELIABILITY_KEY)} for d in per_case]
    return pd.DataFrame(rows).set_index("case") if rows else pd.DataFrame()


@dataclass(frozen=True)
class EvaluationOptions:
    """How diffoseg_evaluate scores a folder; None: taken from the reference (dataset.json, else the labels)."""
    mode: str = "strict"                     # metrics.MODES
    raters: list[str] | None = None          # rater order (default: dataset.json, else sorted sub-folders)
    num_classes: int | None = None           # incl. background (default: dataset.json, else largest label + 1)
    file_ending: str | None = None           # default: dataset.json's
    dataset_json: str | Path | None = None   # default: REF/../dataset.json when it exists
    num_processes: int = 1                   # worker processes
    strict: bool = False                     # missing predictions, references or raters raise instead of warning


def evaluate_folder(ref_folder: str | Path, pred_folder: str | Path, output_file: str | Path | None = None,
                    expected_cases: Sequence[str] | None = None,
                    options: EvaluationOptions = EvaluationOptions()) -> dict:
    """Evaluate every predicted case that has a reference; writes summary.json (+ summary_per_case.csv) and
    returns the summary. Missing predictions, references and raters are printed and listed in
    summary["missing"]; with ``options.strict`` they raise EvaluationIncompleteError before anything is scored. A
    prediction is missing for a case of ``expected_cases`` (a fold's held-out cases; None: every reference case)."""
    mode, num_classes, num_processes = options.mode, options.num_classes, options.num_processes
    if mode not in MODES:
        raise InvalidArgumentError(f"unknown mode '{mode}'. Use one of {MODES}.")
    ref_folder, pred_folder = Path(ref_folder), Path(pred_folder)
    if not pred_folder.is_dir():
        raise EvaluationInputError(f"{pred_folder}: prediction folder does not exist. Create it with diffoseg_predict.")
    info = reference_info(ref_folder, options.raters, options.dataset_json, options.file_ending)
    cases = list_predicted_cases(pred_folder, info.file_ending)
    if not cases:
        raise EvaluationInputError(
            f"{pred_folder}: no predictions found (expected consensus/<case>{info.file_ending} or samples/<case>.npz). "
            "Is this a diffoseg_predict output folder?"
        )
    missing = find_missing(ref_folder, pred_folder, info.raters, info.file_ending, cases, expected_cases)
    if missing.any():
        lines = missing.lines(ref_folder, pred_folder)
        if options.strict:
            raise EvaluationIncompleteError("--strict: " + "\n".join(lines))
        for line in lines:
            logger.warning(line)
    cases = [c for c in cases if c not in missing.references]
    if not cases:
        raise EvaluationInputError(f"{pred_folder}: none of the predicted cases has a reference in {ref_folder}. "
                                   "Check -ref (labelsTr of the same dataset).")
    if num_classes is None:
        num_classes = info.num_classes or _infer_num_classes(ref_folder, info.raters, cases, info.file_ending)
    num_classes = max(int(num_classes), 2)
    jobs = [(ref_folder, pred_folder, info.raters, c, info.file_ending, num_classes, mode) for c in cases]
    if num_processes <= 1 or len(jobs) <= 2:
        per_case = [_evaluate_one(j) for j in jobs]
    else:
        with get_context("spawn").Pool(min(num_processes, len(jobs)), initializer=watch_parent,
                                       initargs=(os.getpid(),)) as pool:
            per_case = pool.map(_evaluate_one, jobs)
    summary = summarize(per_case, info.raters, mode)
    summary["num_classes"] = num_classes
    summary["missing"] = missing.as_dict()
    output_file = Path(output_file) if output_file is not None else pred_folder / "summary.json"
    save_json(summary, output_file)
    table = per_case_table(summary["per_case"])  # with "n/a" where the prediction has no soft output
    atomic_write(output_file.parent / "summary_per_case.csv", lambda p: table.to_csv(p))
    return summary


def fold_held_out_cases(ref_folder: str | Path, fold: str) -> list[str] | None:
    """-f: the held-out cases of ``fold`` in splits_final.json of the dataset whose labelsTr is ``ref_folder``
    ($diffoseg_preprocessed/<its DatasetXXX_Name>); None for fold 'all' (every reference case)."""
    if fold == "all":
        return None
    name = Path(ref_folder).resolve().parent.name
    if not name.startswith("Dataset"):
        raise InvalidArgumentError(f"-f {fold}: -ref {ref_folder} is not RAW/DatasetXXX_Name/labelsTr, so its "
                                   "splits_final.json cannot be found. Pass the dataset's labelsTr or leave out -f.")
    return fold_validation_cases(preprocessed_dataset_folder(name), fold)


def format_summary(summary: dict) -> str:
    """Mean +- std per metric, as a pandas table for the terminal."""
    df = pd.DataFrame({"mean": summary["metrics"], "std": summary["metrics_std"]})
    return f"mode: {summary['mode']}, cases: {summary['num_cases']}\n" + df.to_string(float_format=lambda v: f"{v:.4f}")


def _num_classes_arg(s: str) -> int | None:
    if s == "auto":
        return None
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2 or 'auto', got '{s}'") from None
    if v < 2:
        raise argparse.ArgumentTypeError("num_classes counts the background too: it must be >= 2")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a diffoseg_predict output folder against the raters' masks "
                                            "(GED, Dice_soft, Dice_max, Dice_match, consensus and per-rater Dice, "
                                            "calibration: ECE, Brier, Uncertainty_NCC).")
    p.add_argument("-ref", required=True, help="labelsTr folder of the raw dataset (one sub-folder per rater)")
    p.add_argument("-pred", required=True, help="prediction folder written by diffoseg_predict")
    p.add_argument("-o", default=None, help="output summary.json (default: PRED/summary.json)")
    p.add_argument("--mode", choices=MODES, default="strict",
                   help="strict: definitions as intended; dpersona: reproduce the D-Persona/DiffOSeg metric code "
                        "(see documentation/benchmarking.md). Default: strict")
    p.add_argument("-l", "--num_classes", type=_num_classes_arg, default=None,
                   help="number of classes incl. background, or 'auto' (dataset.json, else largest label + 1). Default: auto")
    p.add_argument("--dataset_json", default=None, help="dataset.json to take rater order, labels and file ending from "
                                                        "(default: REF/../dataset.json when it exists)")
    p.add_argument("-f", dest="fold", default=None,
                   help="the fold whose held-out (validation) cases PRED holds, an integer or 'all': a missing "
                        "prediction is one of that fold's cases (splits_final.json in $diffoseg_preprocessed of the "
                        "dataset of -ref); the other training cases are not expected. Default: every case of -ref")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 1) when predictions, references or raters are missing, instead of warning")
    p.add_argument("-np", type=int, default=default_num_processes(),
                   help="worker processes (default: $diffoseg_def_n_proc, else min(2, CPUs))")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    expected = None if args.fold is None else fold_held_out_cases(args.ref, args.fold)
    options = EvaluationOptions(mode=args.mode, num_classes=args.num_classes, dataset_json=args.dataset_json,
                                num_processes=args.np, strict=args.strict)
    summary = evaluate_folder(args.ref, args.pred, args.o, expected, options)
    print(format_summary(summary))
    out = Path(args.o) if args.o else Path(args.pred) / "summary.json"
    print(f"written: {out} and {out.parent / 'summary_per_case.csv'}")


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_evaluate", main))
