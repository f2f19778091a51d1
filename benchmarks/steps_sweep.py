"""Stage I quality against the number of sampling steps S, with the standard error over cases.

Predicts a fold's held-out cases at every S (Stage I only), evaluates them against the raters
(strict mode) and measures whether the samples are whole masks. Used by the toy proof and for
LIDC fold 0:

    python benchmarks/steps_sweep.py --work /tmp/lidc -d 100 -c 2d -f 0 --steps 5 10 25 50 [--tta]

``--work`` holds raw/, preprocessed/ and results/ of a trained model (the benchmark layout).
``--tta`` also predicts at the planned S with mirroring, to see whether test-time augmentation pays.
Every row is scored on the same cases as the trivial rows (all-empty, the raters' majority repeated) and
the inter-rater row (``evaluation.method_comparison.score_fold``); ``--score_only`` re-scores existing
predictions without sampling again.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from budget_common import set_env

MIN_COMPONENT_PIXELS = 10
# small cases: worker pools would cost more to start than the work they take over
IN_PROCESS = {"num_processes_preprocessing": 1, "num_processes_export": 1}


def whole_mask_fraction(samples_folder: Path, min_pixels: int = MIN_COMPONENT_PIXELS) -> float:
    """Fraction of all sample foreground lying in connected components of >= min_pixels voxels."""
    from scipy import ndimage

    from diffoseg_auto.inference.export_prediction import unpack_samples

    in_big = total = 0
    for f in sorted(samples_folder.glob("*.npz")):
        with np.load(f) as z:
            samples = unpack_samples(dict(z))
        for s in samples:
            lab, _ = ndimage.label(s > 0)
            sizes = np.bincount(lab.ravel())[1:]
            total += int(sizes.sum())
            in_big += int(sizes[sizes >= min_pixels].sum())
    return in_big / total if total else float("nan")


def mean_and_se(summary: dict, key: str) -> tuple[float, float]:
    vals = np.array([float(c.get(key, np.nan)) for c in summary["per_case"]], dtype=float)
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else float("nan")


def sweep(dataset_id: int, configuration: str, fold: int, steps: list[int], work: Path, labels: Path,
          num_samples: int | None = None, mirroring: bool = False, tag: str = "", predict: bool = True) -> list[dict]:
    """One row per S: GED and Dice_soft (mean, standard error over cases) and the whole-mask fraction."""
    from diffoseg_auto.evaluation.evaluate_entrypoint import evaluate_folder
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
    from diffoseg_auto.cli.fold_images import link_fold_images

    val_in = work / f"val_images_fold{fold}"
    link_fold_images(dataset_id, fold, val_in)
    rows = []
    for s in steps:
        pred = work / f"stage1_S{s}{tag}"
        if predict:
            predict_from_folder(val_in, pred, dataset_id, configuration, [fold], device="cpu", save_samples=True,
                            raters="none", sampling_steps=s, num_samples=num_samples, use_mirroring=mirroring,
                            overwrite=True, **IN_PROCESS)
        summary = evaluate_folder(labels, pred, pred / "summary.json")
        ged, ged_se = mean_and_se(summary, "GED")
        dsoft, dsoft_se = mean_and_se(summary, "Dice_soft")
        rows.append({"S": s, "mirroring": mirroring, "GED": ged, "GED_se": ged_se, "Dice_soft": dsoft,
                     "Dice_soft_se": dsoft_se, "whole_mask_fraction": whole_mask_fraction(pred / "samples"),
                     "cases": summary["num_cases"], "folder": str(pred)})
    return rows


def reference_rows(raw_folder: Path, rows: list[dict], num_samples: int) -> dict[str, dict[str, float]]:
    """Strict GED / Dice_soft of every sweep row, all-empty, majority repeated and inter-rater, on the same cases."""
    from diffoseg_auto.dataset.raw_dataset import RawDataset
    from diffoseg_auto.evaluation.method_comparison import score_fold
    from diffoseg_auto.evaluation.prediction_folder import list_predicted_cases

    ds = RawDataset(raw_folder)
    folders = {f"S={r['S']}{' +TTA' if r['mirroring'] else ''}": [Path(r["folder"])] for r in rows}
    cases = sorted(set.intersection(*(set(list_predicted_cases(f[0], ds.file_ending)) for f in folders.values())))
    scores, _ = score_fold(ds, folders, cases, num_samples, modes=("strict",))
    return {row: {k: scores[(row, "strict")].get(k) for k in ("GED", "Dice_soft")} for row, _ in scores}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True)
    p.add_argument("-d", type=int, required=True)
    p.add_argument("-c", default="2d")
    p.add_argument("-f", type=int, default=0)
    p.add_argument("--steps", nargs="+", type=int, default=[5, 10, 25, 50])
    p.add_argument("--num_samples", type=int, default=None, help="default: the plans' diffusion.num_samples")
    p.add_argument("--tta", action="store_true", help="also predict at the planned S with mirroring")
    p.add_argument("--score_only", action="store_true", help="score the existing predictions, do not sample again")
    a = p.parse_args()
    work = Path(a.work)
    set_env(work)
    from diffoseg_auto.plans.plans import load_plans
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    name = resolve_dataset_name(a.d)
    labels = work / "raw" / name / "labelsTr"
    diffusion = load_plans(work / "preprocessed" / name / "DiffOSegPlans.json").get_configuration(a.c).diffusion
    rows = sweep(a.d, a.c, a.f, a.steps, work, labels, a.num_samples, predict=not a.score_only)
    if a.tta:
        rows += sweep(a.d, a.c, a.f, [diffusion.sampling_steps], work, labels, a.num_samples, mirroring=True,
                      tag="_tta", predict=not a.score_only)
    table = reference_rows(labels.parent, rows, a.num_samples or diffusion.num_samples)
    out = work / f"steps_sweep_fold{a.f}.json"
    out.write_text(json.dumps({"dataset": name, "configuration": a.c, "fold": a.f, "rows": rows,
                               "same_cases_strict": table}, indent=2))
    for r in rows:
        print(f"S={r['S']:3d}{' +TTA' if r['mirroring'] else '     '}  GED {r['GED']:.3f} ± {r['GED_se']:.3f}  "
              f"Dice_soft {r['Dice_soft']:.3f} ± {r['Dice_soft_se']:.3f}  whole-mask {r['whole_mask_fraction']:.3f}")
    print("| row | GED | Dice_soft |\n|---|---:|---:|")
    for row, m in table.items():
        print(f"| {row} | {m['GED']:.3f} | {m['Dice_soft']:.3f} |")
    print(f"written {out}")


if __name__ == "__main__":
    main()
