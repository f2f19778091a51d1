"""LIDC-IDRI subset: our planned configuration vs the paper's reference configuration at equal wall clock.

One command does the whole comparison on the real data in ../shared/data/lidc_subset:
convert -> plan/preprocess -> add the reference configuration -> train both stages of fold 0
for both configurations with the same wall-clock budget (run side by side, one CPU thread each,
so both see the same machine) -> predict the fold's validation cases -> evaluate -> one table
(JSON + Markdown). Also measures sampling seconds per image and, with --ged_curve, GED against
the number of sampling steps for our model.

    python benchmarks/lidc_equal_budget.py --work /tmp/lidc_bench --stage1_minutes 30 --stage2_minutes 15

Sampling the reference at its 250 steps is timed on one image (--reference_timing_cases); its
metrics use --reference_eval_steps steps when 250 steps for every case would not fit the CPU budget
(the table says which).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from budget_common import HEADLINE, predict_and_evaluate, set_env, train_with_budget

ROOT = Path(__file__).resolve().parents[1]
LIDC = ROOT.parent / "shared" / "data" / "lidc_subset" / "lidc_subset.npz"
CONFIGS = {"planned": "2d", "paper_reference": "2d_paper_reference"}
def prepare(dataset_id: int) -> None:
    from dataset_conversion.convert_lidc import convert_lidc
    from planners.plan_and_preprocess_entrypoints import plan_and_preprocess
    from planners.reference_configuration import main as add_reference

    convert_lidc(LIDC, dataset_id, overwrite=True)
    plan_and_preprocess(["-d", str(dataset_id), "-c", "2d", "-np", "2", "--verify_dataset_integrity"])
    add_reference(["-d", str(dataset_id)])


def time_sampling(dataset_id: int, configuration: str, steps: int, num_samples: int) -> float:
    """Seconds to draw num_samples Stage I samples of one 128x128 validation image (2 threads)."""
    import numpy as np
    import torch

    from diffoseg_auto.inference.model_loading import load_trained_model
    from diffoseg_auto.inference.predictor import DiffOSegPredictor
    from diffoseg_auto.paths import preprocessed_root, results_root
    from diffoseg_auto.preprocessing.case_storage import list_preprocessed_cases, load_case

    torch.set_num_threads(2)
    name = f"Dataset{dataset_id:03d}_LIDC"
    folder = results_root() / name / f"DiffOSegTrainer__DiffOSegPlans__{configuration}"
    nets, plans, cfg_name, diffusion = load_trained_model(folder, [0], 1, device="cpu")
    cfg = plans.get_configuration(cfg_name)
    data_folder = preprocessed_root() / name / cfg.data_identifier
    data = load_case(data_folder, list_preprocessed_cases(data_folder)[0], mmap=False)[0]
    pred = DiffOSegPredictor(nets, diffusion, cfg, torch.device("cpu"), use_mirroring=False)
    t0 = time.time()
    pred.sample_case(np.asarray(data), num_samples, steps, seed=0)
    return time.time() - t0


def run_both_trainings(a: argparse.Namespace, work: Path) -> dict:
    """Both configurations side by side, one CPU thread each, same wall-clock budget."""
    work.mkdir(parents=True, exist_ok=True)
    prepare(a.dataset_id)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    procs = {tag: subprocess.Popen([sys.executable, __file__, "--work", str(work), "-d", str(a.dataset_id),
                                    "--_train_child", cfg, str(a.stage1_minutes), str(a.stage2_minutes)],
                                   stdout=subprocess.PIPE, stderr=open(work / f"train_{tag}.log", "w"), text=True, env=env)
             for tag, cfg in CONFIGS.items()}
    training = {}
    for tag, proc in procs.items():
        out, _ = proc.communicate()
        lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"training {tag} failed; see {work / f'train_{tag}.log'}")
        training[tag] = json.loads(lines[-1][len("RESULT "):])
    return training


def score_at_planned_steps(a: argparse.Namespace, work: Path) -> None:
    """Stage I metrics of both trained models, each at its own planned number of sampling steps."""
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.plans.plans import load_plans
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from diffoseg_auto.cli.fold_images import link_fold_images

    val = work / "val_images"
    link_fold_images(a.dataset_id, 0, val)
    plans = load_plans(preprocessed_root() / resolve_dataset_name(a.dataset_id) / "DiffOSegPlans.json")
    scored = {}
    for tag, cfg in CONFIGS.items():
        steps = plans.get_configuration(cfg).diffusion.sampling_steps
        r = predict_and_evaluate(a.dataset_id, cfg, work, f"{tag}_{steps}steps", steps, a.planned_steps_only, val,
                                 raters="none", threads=a.threads)
        scored[tag] = {"sampling_steps": steps, "num_samples": a.planned_steps_only,
                       "seconds_per_image": r["seconds_per_image"],
                       **{k: r["metrics"][k] for k in ("GED", "Dice_soft", "Dice_match", "Dice_max")}}
    out = work / "lidc_equal_budget.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["stage1_at_planned_steps"] = scored
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(scored, indent=2))


def render_markdown(r: dict) -> str:
    """The results table of documentation/results.md, from lidc_equal_budget.json."""
    cols = [("planned", "planned (ours)"), ("paper_reference", "paper reference")]
    rows = ["| | " + " | ".join(c[1] for c in cols) + " |", "|---|" + "---:|" * len(cols)]

    def row(name, fn):
        rows.append(f"| {name} | " + " | ".join(fn(tag) for tag, _ in cols) + " |")

    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"
    for m in HEADLINE:
        row(m, lambda tag, m=m: fmt(r[tag]["metrics"].get(m)))
    row("GED (dpersona mode)", lambda tag: fmt(r[tag]["metrics"].get("GED_dpersona_mode")))
    row("sampling steps used for the metrics", lambda tag: str(r[tag]["sampling_steps"] or "planned (25)"))
    row("samples per case", lambda tag: str(r[tag]["num_samples"]))
    row("prediction s / image (N samples + 4 prompts, no TTA)", lambda tag: f"{r[tag]['seconds_per_image']:.1f}")
    sp = r["sampling_seconds_10_samples"]
    row("s for 10 samples of one image at the planned steps (25 vs 250)",
        lambda tag: f"{sp['planned']:.1f}" if tag == "planned" else f"{sp['paper_reference_250_steps']:.1f}")
    for st in ("stage1", "stage2"):
        row(f"{st}: iterations reached (batch)",
            lambda tag, st=st: f"{r['training'][tag][st]['iterations']} ({r['training'][tag][st]['batch_size']})")
    curve = r.get("ged_vs_steps_planned", {})
    lines = ["\n".join(rows), "", f"Sampling speed-up at the planned steps: {sp['paper_reference_250_steps'] / sp['planned']:.1f}x.", ""]
    if curve:
        lines += ["GED and Dice_soft of our model against the number of sampling steps (same held-out cases, "
                  f"{r['ged_vs_steps_planned_samples'] if 'ged_vs_steps_planned_samples' in r else 8} samples):", "",
                  "| steps | GED | Dice_soft |", "|---:|---:|---:|"]
        lines += [f"| {s} | {v['GED']:.4f} | {v['Dice_soft']:.4f} |" for s, v in curve.items()]
    own = r.get("stage1_at_planned_steps")
    if own:
        lines += ["", "Stage I of both models, each sampled at its own planned number of steps "
                  f"({own['planned']['num_samples']} samples per case, `--planned_steps_only`):", "",
                  "| | steps | GED | Dice_soft | Dice_match | Dice_max | s / image |", "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {name} | {own[tag]['sampling_steps']} | {own[tag]['GED']:.4f} | {own[tag]['Dice_soft']:.4f} | "
                  f"{own[tag]['Dice_match']:.4f} | {own[tag]['Dice_max']:.4f} | {own[tag]['seconds_per_image']:.1f} |"
                  for tag, name in cols]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/lidc_bench")
    p.add_argument("-d", "--dataset_id", type=int, default=100)
    p.add_argument("--stage1_minutes", type=float, default=30)
    p.add_argument("--stage2_minutes", type=float, default=15)
    p.add_argument("--num_samples", type=int, default=16)
    p.add_argument("--reference_eval_steps", type=int, default=25,
                   help="sampling steps for the reference's metrics (its own 250 is timed, see --reference_full_steps)")
    p.add_argument("--reference_full_steps", action="store_true", help="evaluate the reference with its planned 250 steps")
    p.add_argument("--ged_curve", type=int, nargs="*", default=[5, 10, 25, 50], help="sampling steps for our GED curve")
    p.add_argument("--ged_curve_samples", type=int, default=8)
    p.add_argument("--skip_training", action="store_true", help="reuse the trained models and training.json in --work")
    p.add_argument("--render_only", action="store_true", help="only print the Markdown table of an existing run")
    p.add_argument("--planned_steps_only", type=int, default=None, metavar="N",
                   help="with trained models in --work: score Stage I of both configurations at their own planned "
                        "steps (25 vs 250) with N samples per case, add it to lidc_equal_budget.json and stop")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for prediction")
    p.add_argument("--_train_child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    work = Path(a.work)
    set_env(work)
    if a.render_only:
        print(render_markdown(json.loads((work / "lidc_equal_budget.json").read_text())), end="")
        return
    if a._train_child:  # child process: train one configuration, print JSON
        cfg, m1, m2 = a._train_child
        print("RESULT " + json.dumps(train_with_budget(a.dataset_id, cfg, float(m1), float(m2))), flush=True)
        return

    if a.planned_steps_only:
        score_at_planned_steps(a, work)
        return

    from diffoseg_auto.cli.fold_images import link_fold_images

    t_start = time.time()
    if a.skip_training:
        training = json.loads((work / "training.json").read_text())
    else:
        training = run_both_trainings(a, work)
        (work / "training.json").write_text(json.dumps(training, indent=2))

    val = work / "val_images"
    link_fold_images(a.dataset_id, 0, val)
    results = {"training": training, "budget_minutes": {"stage1": a.stage1_minutes, "stage2": a.stage2_minutes}}
    results["planned"] = predict_and_evaluate(a.dataset_id, "2d", work, "planned", None, a.num_samples, val)
    ref_steps = None if a.reference_full_steps else a.reference_eval_steps
    results["paper_reference"] = predict_and_evaluate(a.dataset_id, "2d_paper_reference", work, "reference", ref_steps,
                                                      a.num_samples, val)
    # sampling speed, 10 samples of one image, each configuration at its planned number of steps
    results["sampling_seconds_10_samples"] = {
        "planned": round(time_sampling(a.dataset_id, "2d", 25, 10), 2),
        "paper_reference_250_steps": round(time_sampling(a.dataset_id, "2d_paper_reference", 250, 10), 2)}
    curve = {}
    for s in a.ged_curve:
        r = predict_and_evaluate(a.dataset_id, "2d", work, f"curve_{s}", s, a.ged_curve_samples, val, raters="none")
        curve[s] = {"GED": r["metrics"]["GED"], "Dice_soft": r["metrics"]["Dice_soft"]}
    results["ged_vs_steps_planned"] = curve
    results["total_minutes"] = round((time.time() - t_start) / 60, 1)
    results["ged_vs_steps_planned_samples"] = a.ged_curve_samples
    (work / "lidc_equal_budget.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(render_markdown(results), end="")


if __name__ == "__main__":
    main()
