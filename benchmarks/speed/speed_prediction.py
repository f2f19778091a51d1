"""speed.py prediction: this checkout's prediction against an earlier revision, and how its time grows."""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SPEED = Path(__file__).resolve().parent / "speed.py"  # the worker starts through the command line


# ================================================================ prediction: this checkout against an earlier revision
# Comparison: a BU-BIL-sized image (811x1024 at half resolution = 406x512 preprocessed, the '2d_halfres' CPU
# configuration of benchmarks/quality/real_data.py: 256x256 patches, 3x3 windows, 8 stages) predicted with N Stage I samples
# and every one of the R = 10 rater prompts (Stage II), at the same steps, mirroring and threads, once with the code of
# --old_rev (exported with git archive into a temporary folder) and once with this checkout, each in its own process,
# with the same network weights (random, away from the zero inits so that time and rater matter). The new path runs
# at its default precision ('auto'), and with --with_fp32 again at fp32. Scaling (this checkout only): seconds to
# encode and per sampling step for 2D images of 256^2, 512^2, 1024^2, 3D 64^3 and 128^3 (a 3d_fullres-like
# configuration with 64^3 patches), and Stage II with R = 2, 5, 10 raters; projected seconds per image at the planned
# 25 steps = encode + 25 x step.

NUM_RATERS = 10
PREDICTION_WORKER = "_prediction_worker"  # hidden subcommand: one run inside a code root

# BU-BIL '2d' as planned (8 stages, 32..512 features), then the overrides of real_data.py's CPU configuration 2d_halfres
BUBIL_HALFRES = {
    "data_identifier": "bench", "spatial_dims": 2, "patch_size": [256, 256], "batch_size": 8, "spacing": [2.0, 2.0],
    "median_image_size_in_voxels": [406, 512], "normalization_schemes": ["zscore"], "use_mask_for_norm": [False],
    "resampling_order_data": 3, "resampling_order_seg": 1,
    "architecture": {"n_stages": 8, "features_per_stage": [32, 64, 128, 256, 512, 512, 512, 512],
                     "kernel_sizes": [[3, 3]] * 8, "strides": [[1, 1]] + [[2, 2]] * 7, "n_conv_per_stage": [2] * 8,
                     "n_conv_per_stage_decoder": [2] * 7, "num_prompts": 10, "prompt_dim": 32},
    "diffusion": {"num_timesteps": 250, "schedule_shift": 4.0, "sampling_steps": 25, "num_samples": 20,
                  "final_step": "argmax"},  # a final step that the old revision has too
    "augmentation": {"mirror_axes": [0, 1]},
    "inference": {"step_size": 0.5, "use_mirroring": True},
}
# a 3d_fullres-like configuration of a 3D toy dataset: 64^3 patches, 5 stages
TOY_3D = {
    **BUBIL_HALFRES, "spatial_dims": 3, "patch_size": [64, 64, 64], "spacing": [1.0, 1.0, 1.0],
    "median_image_size_in_voxels": [64, 64, 64],
    "architecture": {"n_stages": 5, "features_per_stage": [32, 64, 128, 256, 320], "kernel_sizes": [[3, 3, 3]] * 5,
                     "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4, "n_conv_per_stage": [2] * 5,
                     "n_conv_per_stage_decoder": [2] * 4, "num_prompts": 10, "prompt_dim": 32},
    "diffusion": {"num_timesteps": 250, "schedule_shift": 1.0, "sampling_steps": 25, "num_samples": 20},
    "augmentation": {"mirror_axes": [0, 1, 2]},
}


def plans_dict(configuration: dict, num_raters: int) -> dict:
    return {"dataset_name": "Dataset999_Bench", "plans_name": "DiffOSegPlans", "num_classes": 2,
            "raters": [f"r{i}" for i in range(num_raters)], "num_input_channels": 1,
            "original_median_spacing": configuration["spacing"],
            "original_median_shape": configuration["median_image_size_in_voxels"],
            "foreground_intensity_properties_per_channel": {}, "configurations": {"c": configuration}}


def denoiser_builder():
    """``(plans, configuration, stage) -> denoiser`` of the code root in use: plans.network_arguments'
    denoiser_from_plans, or network.factory.build_denoiser in revisions before networks took torch-level arguments."""
    try:
        from diffoseg_auto.plans.network_arguments import denoiser_from_plans
        return denoiser_from_plans
    except ImportError:
        from diffoseg_auto.network.factory import build_denoiser
        return build_denoiser


def predictor_for(net: Any, diffusion: Any, cfg: Any, **options: Any) -> Any:
    """A CPU DiffOSegPredictor of the code root in use: ``options`` (use_mirroring, step_size, precision) in its
    PredictorSettings, or as keywords in revisions before they were grouped (an old one may lack precision: left out)."""
    from diffoseg_auto.inference import predictor

    params = inspect.signature(predictor.DiffOSegPredictor).parameters
    if "settings" in params:
        return predictor.DiffOSegPredictor(net, diffusion, cfg, "cpu", predictor.PredictorSettings(**options))
    return predictor.DiffOSegPredictor(net, diffusion, cfg, "cpu", **{k: v for k, v in options.items() if k in params})


def predictor_has_precision() -> bool:
    """Whether the code root in use runs the network under a chosen autocast (older revisions ran fp32 only)."""
    from diffoseg_auto.inference import predictor

    params = inspect.signature(predictor.DiffOSegPredictor).parameters
    return "settings" in params or "precision" in params


def make_weights(configuration: dict, num_raters: int, path: Path) -> None:
    """Random Stage I and Stage II weights (zero inits perturbed), saved for every worker."""
    import torch

    from diffoseg_auto.plans.plans import plans_from_dict

    build_denoiser = denoiser_builder()

    plans = plans_from_dict(plans_dict(configuration, num_raters))
    torch.manual_seed(0)
    weights = {}
    for stage in (1, 2):
        net = build_denoiser(plans, "c", stage)
        with torch.no_grad():
            for p in net.parameters():
                if not p.abs().any():
                    p.normal_(0, 0.02)
        weights[stage] = net.state_dict()
    torch.save(weights, path)


# ------------------------------------------------------------------ worker (runs inside the code root it is given)

def prediction_worker(a: dict) -> dict:
    import torch

    import diffoseg_auto
    from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
    from diffoseg_auto.plans.plans import plans_from_dict

    build_denoiser = denoiser_builder()

    assert Path(diffoseg_auto.__file__).resolve().is_relative_to(Path(a["code_root"]).resolve()), diffoseg_auto.__file__
    torch.set_num_threads(a["threads"])
    plans = plans_from_dict(plans_dict(a["configuration"], a["num_raters"]))
    cfg = plans.get_configuration("c")
    weights = torch.load(a["weights"], weights_only=False)
    d = cfg.diffusion
    # the old revision predates x0_given_xt: build the diffusion with the constructor both have, so
    # that both read p(x0 | x_1) as the network's p and end with its argmax (the readout costs no time). The
    # labels are no longer equal to the old ones: the sampler's posterior changed since (documentation/experiments/speed.md)
    diffusion = CategoricalDiffusion(2, d.num_timesteps, d.schedule, d.schedule_shift)
    image = np.random.default_rng(1).standard_normal((1, *a["image_shape"])).astype(np.float32)
    has_precision = predictor_has_precision()
    out = {"code": str(Path(diffoseg_auto.__file__).parent),
           "precision": a["precision"] if has_precision else "fp32 (old code)"}
    labels = {}
    for stage, n in ((1, a["num_samples"]), (2, a["num_raters"])):
        if n == 0:
            continue
        net = build_denoiser(plans, "c", stage)
        net.load_state_dict(weights[stage])
        pred = predictor_for(net, diffusion, cfg, use_mirroring=a["tta"], step_size=0.5, precision=a["precision"])
        raters = None if stage == 1 else list(range(n))
        t0, c0 = time.perf_counter(), time.process_time()
        labels[stage] = pred.sample_case(image, n, a["steps"], rater_id=raters, seed=3)
        out[f"stage{stage}_seconds"] = round(time.perf_counter() - t0, 2)
        # CPU time of this process: on a shared machine the robust measure (one thread: the work itself)
        out[f"stage{stage}_cpu"] = round(time.process_time() - c0, 2)
        if hasattr(pred, "full_image_denoiser"):
            out[f"stage{stage}_encode_seconds"] = timed_encode(pred, image)
    out["seconds"] = round(sum(v for k, v in out.items() if k.endswith("_seconds") and "encode" not in k), 2)
    out["cpu_seconds"] = round(sum(v for k, v in out.items() if k.endswith("_cpu")), 2)
    np.savez_compressed(a["labels_out"], **{f"stage{k}": v for k, v in labels.items()})
    return out


def timed_encode(pred, image: np.ndarray) -> float:
    """CPU seconds to encode every window (new code path only): padding, windows and one encoder pass each."""
    import torch
    from acvl_utils.cropping_and_padding.padding import pad_nd_image

    from diffoseg_auto.inference.sliding_window import compute_gaussian, sliding_window_slicers

    t0 = time.process_time()
    patch = list(pred.configuration.patch_size)
    img, _ = pad_nd_image(torch.from_numpy(image), patch, "constant", {"value": 0}, True)
    windows = sliding_window_slicers(tuple(img.shape[1:]), patch, pred.step_size)
    g = compute_gaussian(patch)
    with torch.no_grad():
        pred.full_image_denoiser(img, windows, g, torch.ones(img.shape[1:]), None if pred.num_raters is None else
                                 torch.zeros(1, dtype=torch.long), 1)
    return round(time.process_time() - t0, 2)


def run_prediction_worker(code_root: Path, args: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_NUM_THREADS": str(args["threads"])}
    args = {**args, "code_root": str(code_root)}
    cmd = [sys.executable, str(SPEED), PREDICTION_WORKER, json.dumps(args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=code_root)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({code_root}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def export_revision(rev: str, dest: Path) -> str:
    """The packages of ``rev`` (git archive) in ``dest``; returns the full commit id."""
    if rev == "merge-base":
        rev = subprocess.run(["git", "-C", str(REPO), "merge-base", "HEAD", "main"], capture_output=True, text=True,
                             check=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", rev], capture_output=True, text=True, check=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "diffoseg_auto", "planners", "dataset_conversion"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return commit


# ------------------------------------------------------------------ comparisons

def label_stats(npz: Path) -> dict:
    with np.load(npz) as z:
        out = {}
        for k in z.files:
            lab = z[k].astype(bool)
            pairs = [(lab[i] == lab[j]).mean() for i in range(len(lab)) for j in range(i + 1, len(lab))]
            out[k] = {"foreground_fraction": round(float(lab.mean()), 4),
                      "mean_pairwise_agreement": round(float(np.mean(pairs)), 4) if pairs else None}
        return out


def agreement(a: Path, b: Path) -> dict:
    with np.load(a) as za, np.load(b) as zb:
        return {k: round(float((za[k] == zb[k]).mean()), 5) for k in za.files}


def compare_revisions(a: argparse.Namespace, work: Path, weights: Path) -> dict:
    old_root = work / "old_code"
    old_root.mkdir()
    commit = export_revision(a.old_rev, old_root)
    base = {"configuration": BUBIL_HALFRES, "num_raters": NUM_RATERS, "weights": str(weights), "image_shape": [406, 512],
            "num_samples": a.num_samples, "steps": a.steps, "tta": a.tta, "threads": a.threads}
    runs = {}
    variants = [("old", old_root, "fp32"), ("new_default", REPO, "auto")] + ([("new_fp32", REPO, "fp32")] if a.with_fp32 else [])
    for name, root, prec in variants:
        npz = work / f"{name}.npz"
        runs[name] = run_prediction_worker(root, {**base, "precision": prec, "labels_out": str(npz)})
        runs[name]["label_stats"] = label_stats(npz)
        print(name, json.dumps(runs[name]), flush=True)
    out = {"old_rev": a.old_rev, "old_commit": commit, "image": "406x512 (BU-BIL 811x1024 at half resolution)",
           "num_samples": a.num_samples, "num_prompts": NUM_RATERS, "steps": a.steps, "tta": a.tta, "threads": a.threads,
           "runs": runs}
    for name in runs:
        if name != "old":
            out[f"speedup_{name}"] = round(runs["old"]["seconds"] / runs[name]["seconds"], 2)
            out[f"cpu_speedup_{name}"] = round(runs["old"]["cpu_seconds"] / runs[name]["cpu_seconds"], 2)
            out[f"label_agreement_old_vs_{name}"] = agreement(work / "old.npz", work / f"{name}.npz")
    return out


def scaling(a: argparse.Namespace, work: Path) -> list[dict]:
    rows = []
    cases = [("2D", BUBIL_HALFRES, [s, s], a.num_samples, NUM_RATERS, False) for s in (256, 512, 1024)]
    cases += [("2D, mirroring TTA", BUBIL_HALFRES, [406, 512], a.num_samples, NUM_RATERS, True)]
    cases += [("2D raters", BUBIL_HALFRES, [512, 512], a.num_samples, r, False) for r in (2, 5)]
    cases += [("3D", TOY_3D, [s] * 3, a.samples_3d, a.samples_3d, False) for s in (64, 128)]
    weights = {}
    for label, cfg, shape, n, r, tta in cases:
        key = (id(cfg), r)
        if key not in weights:
            weights[key] = work / f"weights_{len(weights)}.pt"
            make_weights(cfg, r, weights[key])
        args = {"configuration": cfg, "num_raters": r, "weights": str(weights[key]), "image_shape": shape,
                "num_samples": n, "steps": a.steps, "tta": tta, "threads": a.threads, "precision": "auto",
                "labels_out": str(work / "scaling.npz")}
        res = run_prediction_worker(REPO, args)
        enc = res.get("stage1_encode_seconds", 0) + res.get("stage2_encode_seconds", 0)
        # CPU time (one thread): encode from a separate pass, the rest divided by the steps
        step = max(0.0, (res["cpu_seconds"] - enc) / a.steps)
        row = {"case": label, "image": "x".join(map(str, shape)), "samples": n, "prompts": r, "tta": tta,
               "encode_s": round(enc, 2), "step_s": round(step, 2), "projected_s_at_25_steps": round(enc + 25 * step, 1),
               "precision": res["precision"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def render_prediction(r: dict) -> str:
    lines = []
    c = r.get("comparison")
    if c:
        names = list(c["runs"])
        runs = [c["runs"][n] for n in names]
        head = [f"old ({c['old_commit'][:7]}, fp32)"] + [f"{n.replace('_', ', ')} ({x['precision']})" for n, x in zip(names[1:], runs[1:])]
        lines += ["| BU-BIL 406x512, %d samples + %d prompts, %d steps, %s, %d thread(s) | %s |"
                  % (c["num_samples"], c["num_prompts"], c["steps"], "TTA" if c["tta"] else "no TTA", c["threads"],
                     " | ".join(head)), "|---|" + "---:|" * len(names)]
        lines.append("| CPU seconds per image | " + " | ".join(str(x["cpu_seconds"]) for x in runs) + " |")
        lines.append("| speed-up vs old, CPU time | 1 | " + " | ".join(str(c[f"cpu_speedup_{n}"]) for n in names[1:]) + " |")
        lines.append("| wall seconds per image (shared machine) | " + " | ".join(str(x["seconds"]) for x in runs) + " |")
        for st in ("stage1", "stage2"):
            lines.append(f"| {st}: foreground fraction / agreement between samples | "
                         + " | ".join(f"{x['label_stats'][st]['foreground_fraction']} / "
                                      f"{x['label_stats'][st]['mean_pairwise_agreement']}" for x in runs) + " |")
        lines.append("| voxel agreement of the labels with old (same seed), stage1 / stage2 | 1 / 1 | " + " | ".join(
            "{stage1} / {stage2}".format(**c[f"label_agreement_old_vs_{n}"]) for n in names[1:]) + " |")
    if r.get("scaling"):
        lines += ["", "| case | image | samples + prompts | encode CPU s | CPU s / step | projected CPU s at 25 steps |",
                  "|---|---|---|---:|---:|---:|"]
        for s in r["scaling"]:
            lines.append(f"| {s['case']} | {s['image']} | {s['samples']} + {s['prompts']} | {s['encode_s']} | "
                         f"{s['step_s']} | {s['projected_s_at_25_steps']} |")
    return "\n".join(lines) + "\n"


def norm_ab(a: argparse.Namespace, work: Path, weights: Path) -> dict:
    """This checkout with the stock instance norm against ChannelsLastInstanceNorm2d, per precision, alternating in
    one process (same weights, image and seed): CPU seconds and the label agreement between the two."""
    from torch import nn

    from diffoseg_auto.network import blocks

    base = {"configuration": BUBIL_HALFRES, "num_raters": NUM_RATERS, "weights": str(weights), "image_shape": [406, 512],
            "num_samples": a.num_samples, "steps": a.steps, "tta": False, "threads": a.threads, "code_root": str(REPO)}
    channels_last = blocks.ChannelsLastInstanceNorm2d.forward
    out = {}
    for prec in ("fp32", "auto"):
        row = {}
        for name, forward in (("stock", nn.InstanceNorm2d.forward), ("channels_last", channels_last)):
            blocks.ChannelsLastInstanceNorm2d.forward = forward
            try:
                row[f"{name}_cpu_seconds"] = prediction_worker({**base, "precision": prec, "labels_out": str(work / f"ab_{name}.npz")})["cpu_seconds"]
            finally:
                blocks.ChannelsLastInstanceNorm2d.forward = channels_last
        row["speedup"] = round(row["stock_cpu_seconds"] / row["channels_last_cpu_seconds"], 2)
        row["label_agreement"] = agreement(work / "ab_stock.npz", work / "ab_channels_last.npz")
        out[prec] = row
        print("norm A/B", prec, json.dumps(row), flush=True)
    return out


def prediction(a: argparse.Namespace) -> None:
    result = {"command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = work / "weights.pt"
        make_weights(BUBIL_HALFRES, NUM_RATERS, weights)
        if not a.skip_compare:
            result["comparison"] = compare_revisions(a, work, weights)
        if a.scaling:
            result["scaling"] = scaling(a, work)
        if a.norm_ab:
            result["norm_ab"] = norm_ab(a, work, weights)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(render_prediction(result), end="")
