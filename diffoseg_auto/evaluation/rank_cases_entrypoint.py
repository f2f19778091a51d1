"""``diffoseg_rank_cases -i PRED -o ranking.csv``: the unlabelled cases of a prediction folder, most ambiguous first,
for a clinic that wants the cases the raters would disagree on read twice.

The order is by the predicted disagreement of evaluation/disagreement.py (``--by sample_disagreement``, the
default, or ``rater_spread``), the other measure breaking ties; cases without the measure come last.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from diffoseg_auto.evaluation.disagreement import MEASURES, SAMPLE_DISAGREEMENT, folder_disagreement, rank_by_disagreement
from diffoseg_auto.evaluation.prediction_folder import EvaluationInputError
from diffoseg_auto.utilities.command_runner import run_command
from diffoseg_auto.utilities.file_ops import atomic_write

RANKING_COLUMNS = ["rank", "case", *MEASURES, "num_samples", "num_rater_predictions"]


def rank_cases(pred_folder: str | Path, output_file: str | Path, by: str = SAMPLE_DISAGREEMENT,
               num_classes: int | None = None) -> pd.DataFrame:
    """Write and return the ranking table (RANKING_COLUMNS) of ``pred_folder``."""
    pred_folder = Path(pred_folder)
    if not pred_folder.is_dir():
        raise EvaluationInputError(f"{pred_folder}: prediction folder does not exist (-i). Create it with diffoseg_predict.")
    per_case = folder_disagreement(pred_folder, num_classes)
    if not per_case:
        raise EvaluationInputError(f"{pred_folder}: no disagreement/<case>.json, samples/<case>.npz or raters/ files. "
                                   "Predict with diffoseg_predict (it writes disagreement/), or with --save_samples.")
    if all(math.isnan(v[by]) for v in per_case.values()):
        raise EvaluationInputError(f"{pred_folder}: no case has a {by} (it needs two or more "
                                   f"{'samples' if by == SAMPLE_DISAGREEMENT else 'per-rater predictions'}). "
                                   f"Rank --by {[m for m in MEASURES if m != by][0]}, or predict more of them.")
    rows = [{"rank": i + 1, "case": case, **{k: values.get(k) for k in RANKING_COLUMNS[2:]}}
            for i, (case, values) in enumerate(rank_by_disagreement(per_case, by))]
    table = pd.DataFrame(rows, columns=RANKING_COLUMNS)
    atomic_write(output_file, lambda p: table.to_csv(p, index=False))
    return table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Rank the cases of a diffoseg_predict output folder by their predicted "
                                            "disagreement (no labels needed): the cases a second reader should see "
                                            "come first.")
    p.add_argument("-i", required=True, help="prediction folder written by diffoseg_predict")
    p.add_argument("-o", required=True, help="output CSV (rank, case, sample_disagreement, rater_spread, ...)")
    p.add_argument("--by", choices=MEASURES, default=SAMPLE_DISAGREEMENT,
                   help="sample_disagreement: mean pairwise (1 - Dice) of the Stage I samples (default); "
                        "rater_spread: the same between the per-rater predictions")
    p.add_argument("-l", "--num_classes", type=int, default=None,
                   help="classes incl. background, for folders without disagreement/ files (default: largest label + 1)")
    p.add_argument("--top", type=int, default=10, help="cases printed (default: 10)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    table = rank_cases(args.i, args.o, by=args.by, num_classes=args.num_classes)
    print(table.head(args.top).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"written: {args.o} ({len(table)} case(s))")


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_rank_cases", main))
