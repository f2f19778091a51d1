"""Case triage on held-out folds: does a method's predicted disagreement rank the cases as the raters' own does?

For each method (``-tr``) and fold, the fold's held-out predictions (``fold_N/val_predictions``, else the trainer's
validation exports: method_comparison.prediction_folders) give per case the predicted disagreement of
evaluation/disagreement.py (``sample_disagreement``: mean pairwise 1 - Dice of the samples; ``rater_spread``: the
same between the per-rater predictions); the labels give the true inter-rater disagreement (1 - mean pairwise
Dice of the raters who annotated the case). The table holds Spearman's rho (scipy.stats.spearmanr) of each measure
against the truth, per fold and pooled over the folds' cases, on the cases every method predicted; the tuning fold
(``--tuning_fold``, where settings were chosen) is marked. The headline measure per method: the samples for
DiffOSeg and the Probabilistic U-Net, the heads (``rater_spread``) for the multi-head U-Net.

    python benchmarks/quality/triage.py -d 100 -c 2d -f 0 1 2 3 4 --tuning_fold 0 --out /tmp/triage_lidc
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

if not __package__:  # run by path, not with -m: make the package `benchmarks` importable (benchmarks/README.md)
    sys.path.append(str(Path(__file__).resolve().parents[2]))

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from benchmarks.lib.bench_lib import PLANS, markdown_table  # noqa: E402

DEFAULT_TRAINERS = ["DiffOSegTrainer", "ProbUNetTrainer", "MultiHeadUNetTrainer"]
HEADLINE = {"MultiHeadUNet": "rater_spread"}  # else sample_disagreement
COLUMNS = ["method", "measure", "fold", "num_cases", "spearman", "p_value", "headline"]


def predicted_disagreement(folders: list[Path], num_classes: int) -> dict[str, dict]:
    """case -> measures of a method's prediction folders (Stage I's samples and Stage II's raters may lie in two)."""
    from diffoseg_auto.evaluation.disagreement import MEASURES, folder_disagreement

    merged: dict[str, dict] = {}
    for folder in folders:
        for case, values in folder_disagreement(folder, num_classes).items():
            known = merged.setdefault(case, {m: float("nan") for m in MEASURES})
            known.update({m: values[m] for m in MEASURES if not math.isnan(values[m])})
    return merged


def true_disagreement_of_cases(raw_folder: Path, cases: list[str]) -> dict[str, float]:
    from diffoseg_auto.dataset.raw_dataset import RawDataset
    from diffoseg_auto.evaluation.disagreement import true_disagreement
    from diffoseg_auto.evaluation.prediction_folder import load_reference

    ds = RawDataset(raw_folder)
    out = {}
    for case in cases:
        labels, mask, _, _ = load_reference(ds.folder / "labelsTr", ds.raters, case, ds.file_ending)
        out[case] = true_disagreement(labels, mask, ds.num_classes)
    return out


def _spearman(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """(rho, p) of the finite pairs; NaN with fewer than three or a constant side."""
    import numpy as np
    from scipy.stats import spearmanr

    ok = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if len(ok) < 3 or np.ptp([a for a, _ in ok]) == 0 or np.ptp([b for _, b in ok]) == 0:
        return float("nan"), float("nan")
    res = spearmanr([a for a, _ in ok], [b for _, b in ok])
    return float(res.statistic), float(res.pvalue)


def triage_correlations(raw_folder: Path, method_folders: dict[str, dict[int, list[Path]]],
                        cases_per_fold: dict[int, list[str]], num_classes: int) -> "pd.DataFrame":
    """Spearman's rho of every method's measures against the true disagreement (COLUMNS), per fold and pooled
    ('all'); ``method_folders``: method -> fold -> its prediction folders; ``cases_per_fold``: the cases scored."""
    import pandas as pd

    from diffoseg_auto.evaluation.disagreement import MEASURES

    truth = true_disagreement_of_cases(raw_folder, sorted({c for cs in cases_per_fold.values() for c in cs}))
    rows = []
    for method, by_fold in method_folders.items():
        pooled: dict[str, list] = {m: [] for m in MEASURES}
        for fold, cases in cases_per_fold.items():
            predicted = predicted_disagreement(by_fold[fold], num_classes)
            for m in MEASURES:
                pairs = [(predicted[c][m], truth[c]) for c in cases if c in predicted]
                pooled[m] += pairs
                rows.append([method, m, str(fold), len(pairs), *_spearman(pairs), HEADLINE.get(method, MEASURES[0]) == m])
        rows += [[method, m, "all", len(pooled[m]), *_spearman(pooled[m]), HEADLINE.get(method, MEASURES[0]) == m]
                 for m in MEASURES]
    return pd.DataFrame(rows, columns=COLUMNS)


def collect_folders(dataset: str, configuration: str, folds: list[int], trainers: list[str],
                    plans: str = PLANS) -> tuple[Path, dict[str, dict[int, list[Path]]], dict[int, list[str]], int]:
    """(raw folder, method -> fold -> prediction folders, fold -> cases every method predicted, K)."""
    from diffoseg_auto.dataset.raw_dataset import RawDataset
    from diffoseg_auto.evaluation.method_comparison import fold_validation_cases, method_label, prediction_folders
    from diffoseg_auto.evaluation.prediction_folder import list_predicted_cases
    from diffoseg_auto.paths import preprocessed_dataset_folder, raw_root, results_root
    from diffoseg_auto.results_layout import trainer_folder
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    name = resolve_dataset_name(dataset)
    ds = RawDataset(raw_root() / name)
    methods: dict[str, dict[int, list[Path]]] = {}
    cases: dict[int, list[str]] = {}
    for fold in folds:
        found = {tr: prediction_folders(trainer_folder(name, tr, plans, configuration, root=results_root()), fold)
                 for tr in trainers}
        missing = [tr for tr, f in found.items() if not f]
        if missing:
            raise SystemExit(f"fold {fold}: no held-out predictions of {missing} (fold_{fold}/val_predictions or the "
                             "validation exports); predict them first (real_data.py compare).")
        predicted = [{c for f in folders for c in list_predicted_cases(f, ds.file_ending)} for folders in found.values()]
        cases[fold] = [c for c in fold_validation_cases(preprocessed_dataset_folder(name), fold)
                       if all(c in p for p in predicted)]
        for tr, folders in found.items():
            methods.setdefault(method_label(tr), {})[fold] = folders
    return ds.folder, methods, cases, ds.num_classes


def triage_markdown(table: "pd.DataFrame", tuning_fold: int | None) -> str:
    fmt = lambda v: "n/a" if not math.isfinite(v) else f"{v:.3f}"  # noqa: E731
    rows = [[r.method, r.measure + (" (headline)" if r.headline else ""),
             r.fold + (" (tuning)" if tuning_fold is not None and r.fold == str(tuning_fold) else ""),
             r.num_cases, fmt(r.spearman), fmt(r.p_value)] for r in table.itertuples()]
    return markdown_table(["method", "predicted disagreement", "fold", "cases", "Spearman rho", "p"], rows, left=3) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/quality/triage.py", description=__doc__.splitlines()[0])
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-c", required=True, help="configuration")
    p.add_argument("-f", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="folds (default: 0 1 2 3 4)")
    p.add_argument("-tr", nargs="+", default=DEFAULT_TRAINERS, help=f"trainers (default: {' '.join(DEFAULT_TRAINERS)})")
    p.add_argument("-p", default=PLANS, help=f"plans identifier (default: {PLANS})")
    p.add_argument("--tuning_fold", type=int, default=None, help="the fold settings were chosen on (marked)")
    p.add_argument("--out", required=True, help="folder for triage.csv and triage.md")
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    raw, methods, cases, k = collect_folders(a.d, a.c, a.f, a.tr, a.p)
    table = triage_correlations(raw, methods, cases, k)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "triage.csv", index=False)
    (out / "triage.md").write_text(triage_markdown(table, a.tuning_fold))
    print(triage_markdown(table, a.tuning_fold))


if __name__ == "__main__":
    main()
