"""``diffoseg_find_best_configuration``: which trained configuration, or ensemble of configurations, to predict with
(as nnU-Net's ``nnUNetv2_find_best_configuration``), and the exact commands to do so.

Candidates: every trainer folder ``<Trainer>__<Plans>__<config>`` of the dataset for the given trainers (-tr),
plans (-p) and configurations (-c; default: every one trained), and every ensemble of two or more of them
(unless --disable_ensembling). Each is scored on the cross-validation's held-out cases: per fold, the fold's
``val`` cases (splits_final.json) that every candidate predicted, read from the fold's ``val_predictions``, else the
trainer's own validation exports (method_comparison.prediction_folders). An ensemble's samples are its members'
samples pooled, as ``diffoseg_ensemble`` pools them. Per case: GED and Dice_soft (strict, metrics.py) of the
samples against the raters who annotated it.

The rule: the lowest mean GED over all held-out cases wins, unless another candidate is within one standard
error of it, the standard error of the mean of the paired per-case GED differences (the same cases for every
candidate): among the candidates that close, the highest mean Dice_soft wins (then the fewest members, then the
name). A configuration that lacks held-out predictions for a requested fold, or whose predictions lack samples,
is refused with what is missing.

Written beside the dataset's results ($diffoseg_results/DatasetXXX_Name/): ``inference_information.json`` (every
candidate's numbers, per fold too, the pick, the rule, and each candidate's commands) and
``inference_instructions.txt`` (the pick and its ``diffoseg_predict`` / ``diffoseg_ensemble`` commands;
INPUT_FOLDER and OUTPUT_FOLDER are the user's).
"""
from __future__ import annotations

import argparse
import logging
import math
import shlex
import sys
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Sequence

import numpy as np

from diffoseg_auto.dataset.raw_dataset import RawDataset
from diffoseg_auto.errors import MissingFileError
from diffoseg_auto.dataset.splits_file import fold_validation_cases
from diffoseg_auto.evaluation.method_comparison import load_method_case, prediction_folders
from diffoseg_auto.evaluation.metrics import CaseScoring, evaluate_case
from diffoseg_auto.evaluation.prediction_folder import EvaluationInputError, list_predicted_cases, load_reference
from diffoseg_auto.paths import preprocessed_dataset_folder, raw_root, results_root
from diffoseg_auto.results_layout import (VAL_PREDICTIONS, fold_folder, parse_trainer_folder_name, trainer_folder,
                                          trainer_folder_name, validation_folder)
from diffoseg_auto.utilities.command_runner import run_command
from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
from diffoseg_auto.utilities.file_ops import atomic_write_text, save_json

logger = logging.getLogger(__name__)

INSTRUCTIONS, INFORMATION = "inference_instructions.txt", "inference_information.json"
SCORES = ("GED", "Dice_soft")
RULE = ("lowest mean GED over the held-out cases; a candidate within one standard error of it (standard error of "
        "the mean paired per-case GED difference) counts as equal, and the highest mean Dice_soft among those wins "
        "(then the fewest members, then the name)")


class IncompleteCrossValidationError(MissingFileError):
    """A configuration lacks held-out predictions of some requested folds."""


@dataclass(frozen=True)
class Member:
    trainer: str
    plans: str
    configuration: str

    @property
    def name(self) -> str:
        return trainer_folder_name(self.trainer, self.plans, self.configuration)


@dataclass
class Candidate:
    members: tuple[Member, ...]
    # per held-out case (fold, case) in one order for every candidate
    ged: list[float] = field(default_factory=list)
    dice_soft: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.members[0].name if len(self.members) == 1 else "ensemble(" + " + ".join(m.name for m in self.members) + ")"


def find_members(dataset_name: str, trainers: Sequence[str], plans: Sequence[str],
                 configurations: Sequence[str] | None) -> list[Member]:
    """The trained (trainer, plans, configuration) of the request; a named configuration without a folder is an error."""
    base = results_root() / dataset_name
    if configurations:
        members = [Member(t, p, c) for t in trainers for p in plans for c in configurations]
        absent = [m.name for m in members if not trainer_folder(dataset_name, m.trainer, m.plans, m.configuration).is_dir()]
        if absent:
            raise IncompleteCrossValidationError(
                f"{base}: no trained model {', '.join(absent)}. Train it (diffoseg_train) or leave it out of -c / -tr / -p.")
        return members
    found = sorted(parse_trainer_folder_name(p.name) for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    members = [Member(t, p, c) for t, p, c in found if t in trainers and p in plans and c]
    if not members:
        raise IncompleteCrossValidationError(f"{base}: no trained model of trainer(s) {list(trainers)} with plans "
                                             f"{list(plans)}. Train one first (diffoseg_train).")
    return members


def member_folders(dataset_name: str, members: Sequence[Member], folds: Sequence[int]) -> dict[Member, dict[int, list[Path]]]:
    """Each member's prediction folders per fold; every missing fold of every member in one error."""
    out, missing = {}, []
    for m in members:
        folder = trainer_folder(dataset_name, m.trainer, m.plans, m.configuration)
        out[m] = {f: prediction_folders(folder, f) for f in folds}
        lacking = [f for f in folds if not out[m][f]]
        if lacking:
            missing.append(f"{m.name} fold(s) {', '.join(map(str, lacking))}")
    if missing:
        raise IncompleteCrossValidationError(
            f"{results_root() / dataset_name}: missing held-out predictions of {'; '.join(missing)} (no "
            f"{fold_folder('', 'N').as_posix()}/{VAL_PREDICTIONS} or {validation_folder('', 'N', 1).as_posix()}). "
            "Train those folds (diffoseg_train validates each at its end) or pass the folds every configuration has "
            "with -f.")
    return out


def candidates_of(members: Sequence[Member], ensembles: bool) -> list[Candidate]:
    sizes = range(1, len(members) + 1) if ensembles else range(1, 2)
    return [Candidate(tuple(c)) for k in sizes for c in combinations(members, k)]


def score_candidates(ds: RawDataset, folders: dict[Member, dict[int, list[Path]]], folds: Sequence[int],
                     candidates: list[Candidate]) -> dict[int, list[str]]:
    """Fill every candidate's per-case GED and Dice_soft; returns the cases scored per fold."""
    scored = {}
    splits_folder = preprocessed_dataset_folder(ds.name)
    for fold in folds:
        predicted = [{c for f in by_fold[fold] for c in list_predicted_cases(f, ds.file_ending)}
                     for by_fold in folders.values()]
        held_out = fold_validation_cases(splits_folder, fold)
        cases = [c for c in held_out if all(c in p for p in predicted)]
        if len(cases) < len(held_out):
            logger.warning(f"fold {fold}: {len(held_out) - len(cases)} held-out case(s) not predicted by every "
                           "configuration are left out (every candidate is scored on the same cases).")
        scored[fold] = cases
        for case in cases:
            labels, mask, props, ref_file = load_reference(ds.folder / "labelsTr", ds.raters, case, ds.file_ending)
            samples = {}
            for m, by_fold in folders.items():
                samples[m] = load_method_case(ds, by_fold[fold], case, props, ref_file).samples
                if samples[m] is None:
                    raise EvaluationInputError(f"{by_fold[fold][0]}: no samples/{case}.npz. Predict the fold's held-out "
                                               f"cases with --save_samples into {VAL_PREDICTIONS} ({m.name}, fold {fold}).")
            for cand in candidates:
                pooled = np.concatenate([samples[m] for m in cand.members])
                res = evaluate_case(pooled, labels, mask, ds.num_classes, scoring=CaseScoring("strict"))
                cand.ged.append(float(res["GED"]))
                cand.dice_soft.append(float(res["Dice_soft"]))
    return scored


def paired_se(a: Sequence[float], b: Sequence[float]) -> float:
    """Standard error of the mean of the per-case differences a - b (0 with fewer than two cases)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    return float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0


def select_best(candidates: Sequence[Candidate]) -> tuple[Candidate, dict[str, dict]]:
    """The pick of the rule (RULE) and per candidate: mean GED and Dice_soft, the difference to the lowest GED, its
    standard error, and whether it counts as equal."""
    mean = lambda v: float(np.nanmean(v))  # noqa: E731
    lowest = min(candidates, key=lambda c: (mean(c.ged), len(c.members), c.name))
    stats = {}
    for c in candidates:
        diff, se = mean(c.ged) - mean(lowest.ged), paired_se(c.ged, lowest.ged)
        stats[c.name] = {"GED": mean(c.ged), "Dice_soft": mean(c.dice_soft), "GED_difference_to_lowest": diff,
                         "GED_difference_se": se, "equal_to_lowest_GED": bool(diff <= se), "num_cases": len(c.ged)}
    tied = [c for c in candidates if stats[c.name]["equal_to_lowest_GED"]]
    best = min(tied, key=lambda c: (-stats[c.name]["Dice_soft"], len(c.members), c.name))
    return best, stats


def commands_for(candidate: Candidate, dataset_name: str, folds: Sequence[int]) -> list[str]:
    """The commands that predict INPUT_FOLDER into OUTPUT_FOLDER with ``candidate``, as validated."""
    fold_args = " ".join(map(str, folds))

    def predict(m: Member, out: str, extra: str = "") -> str:
        return (f"diffoseg_predict -d {shlex.quote(dataset_name)} -i INPUT_FOLDER -o {out} -c {shlex.quote(m.configuration)} "
                f"-tr {shlex.quote(m.trainer)} -p {shlex.quote(m.plans)} -f {fold_args}{extra}")

    if len(candidate.members) == 1:
        return [predict(candidate.members[0], "OUTPUT_FOLDER")]
    outs = [f"OUTPUT_FOLDER_MODEL_{i + 1}" for i in range(len(candidate.members))]
    # the ensemble pools the members' samples and averages their probabilities: both must be written
    return ([predict(m, o, " --save_samples --save_probabilities") for m, o in zip(candidate.members, outs)]
            + [f"diffoseg_ensemble -i {' '.join(outs)} -o OUTPUT_FOLDER"])


def per_fold_scores(candidate: Candidate, scored: dict[int, list[str]]) -> dict[str, dict[str, float]]:
    out, start = {}, 0
    for fold, cases in scored.items():
        sl = slice(start, start + len(cases))
        out[str(fold)] = {"GED": float(np.nanmean(candidate.ged[sl])) if cases else float("nan"),
                          "Dice_soft": float(np.nanmean(candidate.dice_soft[sl])) if cases else float("nan"),
                          "num_cases": len(cases)}
        start += len(cases)
    return out


def instructions_text(best: Candidate, stats: dict[str, dict], commands: list[str], dataset_name: str,
                      folds: Sequence[int]) -> str:
    lines = [f"{dataset_name}: best of {len(stats)} candidate(s) on the held-out cases of folds "
             f"{', '.join(map(str, folds))}: {best.name}", "", f"Rule: {RULE}.", "",
             "candidate | GED | Dice_soft | GED - lowest | SE | equal", "---|---:|---:|---:|---:|:---:"]
    for name, s in sorted(stats.items(), key=lambda kv: kv[1]["GED"]):
        lines.append(f"{name} | {s['GED']:.4f} | {s['Dice_soft']:.4f} | {s['GED_difference_to_lowest']:+.4f} | "
                     f"{s['GED_difference_se']:.4f} | {'yes' if s['equal_to_lowest_GED'] else 'no'}")
    lines += ["", "Predict new images (INPUT_FOLDER: the raw layout <case>_<XXXX><ending>) with:", ""] + commands
    return "\n".join(lines) + "\n"


def find_best_configuration(dataset: str | int, configurations: Sequence[str] | None = None,
                            trainers: Sequence[str] = ("DiffOSegTrainer",), plans: Sequence[str] = ("DiffOSegPlans",),
                            folds: Sequence[int] = (0, 1, 2, 3, 4), ensembles: bool = True) -> dict:
    """Score every candidate, pick by RULE, write INSTRUCTIONS and INFORMATION; returns the information dict."""
    dataset_name = resolve_dataset_name(dataset)
    folds = [int(f) for f in folds]
    members = find_members(dataset_name, trainers, plans, configurations)
    folders = member_folders(dataset_name, members, folds)
    candidates = candidates_of(members, ensembles)
    ds = RawDataset(raw_root() / dataset_name)
    scored = score_candidates(ds, folders, folds, candidates)
    if not any(scored.values()):
        raise EvaluationInputError(f"{results_root() / dataset_name}: no held-out case of folds {folds} is predicted by "
                                   "every configuration. Predict the folds' held-out cases first.")
    best, stats = select_best(candidates)
    info = {"dataset_name": dataset_name, "folds": folds, "selection_rule": RULE,
            "cases_per_fold": {str(f): c for f, c in scored.items()}, "best": best.name,
            "commands": commands_for(best, dataset_name, folds),
            "candidates": [{"name": c.name, "members": [vars(m) for m in c.members], **stats[c.name],
                            "per_fold": per_fold_scores(c, scored), "commands": commands_for(c, dataset_name, folds)}
                           for c in candidates]}
    out = results_root() / dataset_name
    save_json(info, out / INFORMATION)
    atomic_write_text(out / INSTRUCTIONS, instructions_text(best, stats, info["commands"], dataset_name, folds))
    return info


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Pick the best trained configuration or ensemble of configurations from the "
                                            "cross-validation's held-out predictions (GED first, then Dice_soft within "
                                            "one standard error) and write the commands that predict with it.")
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-c", nargs="+", default=None, help="configurations (default: every trained one)")
    p.add_argument("-tr", nargs="+", default=["DiffOSegTrainer"], help="trainers (default: DiffOSegTrainer)")
    p.add_argument("-p", nargs="+", default=["DiffOSegPlans"], help="plans identifiers (default: DiffOSegPlans)")
    p.add_argument("-f", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="folds (default: 0 1 2 3 4)")
    p.add_argument("--disable_ensembling", action="store_true", help="score single configurations only")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    info = find_best_configuration(a.d, a.c, a.tr, a.p, a.f, ensembles=not a.disable_ensembling)
    out = results_root() / info["dataset_name"]
    print((out / INSTRUCTIONS).read_text(), end="")
    print(f"written: {out / INSTRUCTIONS} and {out / INFORMATION}")


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_find_best_configuration", main))
