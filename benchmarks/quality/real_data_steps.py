"""real_data.py steps: Stage I quality against the sampling steps S (and mirroring TTA), and strict per-rater Dice
against the samples per rater prompt, on a trained fold."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.lib.bench_lib import (PLANS, format_rater_samples_row, format_sweep_row, markdown_table, one_se_choices,
                                      rater_samples_sweep, set_env, sweep)


# ---------------------------------------------------------------- steps: Stage I against the number of sampling steps

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


def steps(a: argparse.Namespace) -> None:
    work = Path(a.work)
    set_env(work)
    from diffoseg_auto.plans.plans import load_plans
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    name = resolve_dataset_name(a.d)
    labels = work / "raw" / name / "labelsTr"
    diffusion = load_plans(work / "preprocessed" / name / f"{PLANS}.json").get_configuration(a.c).diffusion
    tag = f"_d{a.d}_{a.c}_f{a.f}"  # one --work may hold several datasets, configurations and folds
    rows = sweep(a.d, a.c, a.f, a.steps, work, labels, a.num_samples, tag=tag, predict=not a.score_only)
    if a.tta:
        rows += sweep(a.d, a.c, a.f, [diffusion.sampling_steps], work, labels, a.num_samples, mirroring=True,
                      tag=tag + "_tta", predict=not a.score_only)
    table = reference_rows(labels.parent, rows, a.num_samples or diffusion.num_samples)
    rater_rows = rater_samples_sweep(a.d, a.c, a.f, a.samples_per_rater, work, labels, tag=tag,
                                     predict=not a.score_only) if a.samples_per_rater else []
    choices = one_se_choices(rows, rater_rows)
    out = work / f"steps_sweep{tag}.json"
    out.write_text(json.dumps({"dataset": name, "configuration": a.c, "fold": a.f, "tuning_fold": a.f == 0,
                               "rows": rows, "same_cases_strict": table, "samples_per_rater_rows": rater_rows,
                               "one_se_choices": choices}, indent=2))
    for r in rows:
        print(format_sweep_row(r))
    for r in rater_rows:
        print(format_rater_samples_row(r))
    print(f"one-standard-error rule picks: {choices}")
    print(markdown_table(["row", "GED", "Dice_soft"], [[row, f"{m['GED']:.3f}", f"{m['Dice_soft']:.3f}"]
                                                       for row, m in table.items()]))
    print(f"written {out}")
