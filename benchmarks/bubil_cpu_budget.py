"""BU-BIL cells on a CPU budget: fold 0 of the real-data issue's second benchmark.

Convert ../shared/data/bubil_cells -> plan and preprocess (the planned '2d': 512x512 patches at full
resolution) -> add a CPU-sized configuration '2d_halfres' to the plans by inheritance, exactly as a
user would edit the JSON (spacing 2 px, 256x256 patches, so an 811x1024 image becomes 406x512 and is
still predicted with 3 x 3 sliding windows) -> preprocess it -> train both stages of fold 0 with a
wall-clock budget -> predict the fold's held-out images with every rater prompt -> evaluate in strict
and D-Persona modes -> the inter-rater (leave-one-rater-out) row on the same images -> one table
(JSON + Markdown) and sample-grid figures.

    python benchmarks/bubil_cpu_budget.py --work /tmp/bubil_bench --stage1_minutes 20 --stage2_minutes 10

Why not the planned '2d' on CPU: one training iteration at 512x512 x batch 10 with 8 stages takes tens
of seconds on 2 CPU cores, so a 30-minute budget would reach only a few dozen iterations. On a GPU,
train the planned '2d' (the table's command names the configuration).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from budget_common import HEADLINE, predict_and_evaluate, rows_max_on_diagonal, set_env, train_with_budget
from cpu_configurations import add_cpu_configuration

ROOT = Path(__file__).resolve().parents[1]
BUBIL = ROOT.parent / "shared" / "data" / "bubil_cells" / "BU-BIL_Dataset1"
CPU_CONFIGURATION = "2d_halfres"


def prepare(dataset_id: int, batch_size: int, configuration: str = CPU_CONFIGURATION) -> None:
    from dataset_conversion.convert_bubil import convert_bubil
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from planners.plan_and_preprocess_entrypoints import plan_and_preprocess, preprocess

    convert_bubil(BUBIL, dataset_id, overwrite=True)
    plan_and_preprocess(["-d", str(dataset_id), "-c", "2d", "-np", "2", "--verify_dataset_integrity", "--no_pp"])
    add_cpu_configuration(preprocessed_root() / resolve_dataset_name(dataset_id) / "DiffOSegPlans.json", configuration,
                          batch_size)
    preprocess(["-d", str(dataset_id), "-c", configuration, "-np", "2"])


def render_markdown(r: dict) -> str:
    """The results table of documentation/results.md, from bubil_cpu_budget.json."""
    ours, ref = r["planned"], r["inter_rater"]
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"
    rows = [f"| | ours (`{CPU_CONFIGURATION}`) | inter-rater (same images) |", "|---|---:|---:|"]
    for m in HEADLINE:
        rows.append(f"| {m} | {fmt(ours['metrics'].get(m))} | {fmt(ref['metrics'].get(m))} |")
    rows.append(f"| GED (dpersona mode) | {fmt(ours['metrics'].get('GED_dpersona_mode'))} | "
                f"{fmt(ref.get('GED_dpersona_mode'))} |")
    rows.append(f"| samples per image / steps | {ours['num_samples']} / {ours['sampling_steps'] or 'planned (25)'} | - |")
    rows.append(f"| prediction s / image (samples + {len(r['raters'])} prompts, 3x3 windows) | "
                f"{ours['seconds_per_image']:.1f} | - |")
    for st in ("stage1", "stage2"):
        t = r["training"][st]
        rows.append(f"| {st}: iterations reached (batch), minutes | {t['iterations']} ({t['batch_size']}), "
                    f"{t['seconds'] / 60:.1f} | - |")
    rows_with_values = [r for r in rows_max_on_diagonal(ours.get("rater_prompt_dice_matrix") or []) if r is not None]
    d, n = sum(rows_with_values), len(rows_with_values)
    rows.append(f"| rater x prompt rows with the maximum on the diagonal | {d} of {n} | - |")
    return "\n".join(rows) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/bubil_bench")
    p.add_argument("-d", "--dataset_id", type=int, default=101)
    p.add_argument("--stage1_minutes", type=float, default=20)
    p.add_argument("--stage2_minutes", type=float, default=10)
    p.add_argument("--batch_size", type=int, default=8, help=f"batch of '{CPU_CONFIGURATION}'")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for training")
    p.add_argument("--num_samples", type=int, default=10)
    p.add_argument("--sampling_steps", type=int, default=None, help="default: the plans' (25)")
    p.add_argument("--skip_training", action="store_true", help="reuse the trained model and training.json in --work")
    p.add_argument("--render_only", action="store_true", help="only print the Markdown table of an existing run")
    a = p.parse_args()
    work = Path(a.work)
    set_env(work)
    if a.render_only:
        print(render_markdown(json.loads((work / "bubil_cpu_budget.json").read_text())), end="")
        return

    from diffoseg_auto.evaluation.benchmark_figures import case_figures
    from diffoseg_auto.evaluation.inter_rater import inter_rater_reference
    from diffoseg_auto.paths import raw_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from diffoseg_auto.cli.fold_images import link_fold_images

    t_start = time.time()
    work.mkdir(parents=True, exist_ok=True)
    if a.skip_training:
        training = json.loads((work / "training.json").read_text())
    else:
        prepare(a.dataset_id, a.batch_size)
        training = train_with_budget(a.dataset_id, CPU_CONFIGURATION, a.stage1_minutes, a.stage2_minutes, a.threads)
        (work / "training.json").write_text(json.dumps(training, indent=2))

    raw = raw_root() / resolve_dataset_name(a.dataset_id)
    val = work / "val_images"
    cases = link_fold_images(a.dataset_id, 0, val)
    results = {"training": training, "configuration": CPU_CONFIGURATION,
               "budget_minutes": {"stage1": a.stage1_minutes, "stage2": a.stage2_minutes},
               "raters": json.loads((raw / "dataset.json").read_text())["raters"], "cases": cases}
    results["planned"] = predict_and_evaluate(a.dataset_id, CPU_CONFIGURATION, work, "halfres", a.sampling_steps,
                                              a.num_samples, val)
    ref = inter_rater_reference(raw, cases=cases)
    results["inter_rater"] = {"metrics": ref["metrics"], "metrics_std": ref["metrics_std"],
                              "GED_dpersona_mode": inter_rater_reference(raw, cases=cases, mode="dpersona")["metrics"].get("GED")}
    figures = case_figures(raw, [work / "pred_halfres"], work / "figures", "bubil_fold0_halfres", max_cases=2)
    results["figures"] = [str(f) for f in figures]
    results["total_minutes"] = round((time.time() - t_start) / 60, 1)
    (work / "bubil_cpu_budget.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(render_markdown(results), end="")


if __name__ == "__main__":
    main()
