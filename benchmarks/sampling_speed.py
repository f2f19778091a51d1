"""Sampling speed: our planned configuration vs the DiffOSeg paper's reference configuration.

    python benchmarks/sampling_speed.py                      # 128x128 (LIDC image 0 if present), 10 samples
    python benchmarks/sampling_speed.py --quick              # reference: time a few steps, extrapolate to 250
    python benchmarks/sampling_speed.py --ged_curve MODEL_FOLDER -f 0 [--cases ...]   # GED vs sampling steps

Ours: the planned configuration (cached_encoder denoiser: the image is encoded once, every step
runs only the light x_t path) with the planned number of steps S. Reference: the paper's
setting (ADM-style 'reference_openai' network, concat input layout, 250 steps). Both use
random weights unless checkpoints are given (speed does not depend on the weights); both run
through DiffOSegPredictor, without mirroring unless --tta. This records numbers; it does not
pass or fail.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

LIDC_NPZ = Path("/work/shared/data/lidc_subset/lidc_subset.npz")


def benchmark_image() -> tuple[np.ndarray, str]:
    """(1, 128, 128) float32: LIDC image 0 when the shared data is there, else a fixed random image."""
    if LIDC_NPZ.is_file():
        with np.load(LIDC_NPZ) as z:
            return z["images"][0][None].astype(np.float32), f"LIDC image 0 ({LIDC_NPZ})"
    rng = np.random.default_rng(0)
    return rng.random((1, 128, 128), dtype=np.float32), "random 128x128 image (LIDC subset not found)"


def lidc_like_plans():
    """What the planner chooses for the LIDC subset (71 cases, 128x128 at spacing 1, 4 raters, CT)."""
    from planners.experiment_planner import ExperimentPlanner

    dj = {"raters": ["r0", "r1", "r2", "r3"], "labels": {"background": 0, "nodule": 1}, "channel_names": {"0": "CT"}}
    fp = {"num_cases": 71, "spacings": [[1.0, 1.0]] * 71, "shapes_after_crop": [[128, 128]] * 71,
          "intensity_range_per_channel": {"0": {"min": 0.0, "max": 1.0, "integer_valued": False}},
          "median_relative_size_after_cropping": 1.0,
          "foreground_intensity_properties_per_channel": {"0": {"mean": 0.5, "std": 0.2, "percentile_00_5": 0.0,
                                                                 "percentile_99_5": 1.0}}}
    return ExperimentPlanner(dj, fp, "Dataset501_LIDC").plan()


def reference_configuration(plans, configuration: str):
    """The paper's setting on top of the planned configuration (planners.reference_configuration:
    ADM network as in the official code, concat layout, T = S = 250), under the same configuration name."""
    from planners.reference_configuration import add_reference_configuration

    ref = add_reference_configuration(copy.deepcopy(plans), configuration, "paper_reference")
    ref.configurations[configuration] = ref.configurations.pop("paper_reference")
    return ref


def _predictor(plans, configuration: str, checkpoint: str | None, device: torch.device, tta: bool):
    from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
    from diffoseg_auto.inference.predictor import DiffOSegPredictor
    from diffoseg_auto.network.factory import build_denoiser
    from diffoseg_auto.io.checkpoint_io import load_checkpoint

    torch.manual_seed(0)
    net = build_denoiser(plans, configuration, 1)
    if checkpoint:
        net.load_state_dict(load_checkpoint(checkpoint)["network_weights"])
    cfg = plans.get_configuration(configuration)
    d = cfg.diffusion
    diffusion = CategoricalDiffusion.from_plan(plans.num_classes, d)
    return DiffOSegPredictor(net, diffusion, cfg, device, use_mirroring=tta), sum(p.numel() for p in net.parameters())


def _timed(pred, image: np.ndarray, n: int, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    pred.sample_case(image, n, steps, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def run_speed(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    image, source = benchmark_image()
    plans = lidc_like_plans()
    cfg_name = "2d"
    ours_steps = args.steps or plans.get_configuration(cfg_name).diffusion.sampling_steps
    ref_plans = reference_configuration(plans, cfg_name)
    print(f"image: {source}; {args.num_samples} samples; device {device}; threads {torch.get_num_threads()}; "
          f"weights: {'checkpoints' if (args.our_checkpoint or args.reference_checkpoint) else 'random (timing only)'}")

    ours, n_ours = _predictor(plans, cfg_name, args.our_checkpoint, device, args.tta)
    _timed(ours, image, args.num_samples, 1, device)  # warm-up (allocations, kernels)
    t_ours = _timed(ours, image, args.num_samples, ours_steps, device)
    print(f"ours      : {plans.get_configuration(cfg_name).architecture.denoiser}, {n_ours / 1e6:.2f} M parameters, "
          f"S={ours_steps}: {t_ours:.2f} s per image")

    ref, n_ref = _predictor(ref_plans, cfg_name, args.reference_checkpoint, device, args.tta)
    _timed(ref, image, args.num_samples, 1, device)
    one_step = _timed(ref, image, args.num_samples, 1, device)
    if not args.quick and one_step * 250 > args.budget_minutes * 60:
        # never extrapolate silently: say what a full run costs and how to get a number
        print(f"reference : reference_openai (concat), {n_ref / 1e6:.2f} M parameters: NOT RUN. One step takes "
              f"{one_step:.2f} s here, so 250 steps would take about {one_step * 250 / 60:.0f} min, more than "
              f"--budget_minutes {args.budget_minutes:g}. Rerun with --quick (extrapolated, labelled as such), on a GPU, "
              "or with a larger --budget_minutes.")
        return {"image": source, "num_samples": args.num_samples, "device": str(device), "ours_steps": ours_steps,
                "ours_seconds": t_ours, "reference_seconds": None, "reference_one_step_seconds": one_step,
                "tta": bool(args.tta)}
    if args.quick:
        k1, k2 = 2, 6
        t1, t2 = _timed(ref, image, args.num_samples, k1, device), _timed(ref, image, args.num_samples, k2, device)
        per_step = (t2 - t1) / (k2 - k1)
        t_ref = t1 + per_step * (250 - k1)
        how = f"EXTRAPOLATED linearly from {k1} and {k2} timed steps (--quick): {per_step:.3f} s per step"
    else:
        t_ref = _timed(ref, image, args.num_samples, 250, device)
        how = "measured, all 250 steps"
    print(f"reference : reference_openai (concat), {n_ref / 1e6:.2f} M parameters, S=250: {t_ref:.2f} s per image ({how})")
    ratio = t_ref / t_ours
    print(f"speed ratio reference / ours: {ratio:.1f}x")
    return {"image": source, "num_samples": args.num_samples, "device": str(device), "ours_steps": ours_steps,
            "ours_seconds": t_ours, "reference_seconds": t_ref, "reference_extrapolated": bool(args.quick),
            "ratio": ratio, "tta": bool(args.tta)}


def run_ged_curve(args: argparse.Namespace) -> dict:
    """GED (per foreground class, averaged) vs sampling steps on preprocessed validation cases."""
    from diffoseg_auto.evaluation.metrics import ged
    from diffoseg_auto.inference.model_loading import load_trained_model
    from diffoseg_auto.inference.predictor import DiffOSegPredictor
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.preprocessing.case_storage import list_preprocessed_cases, load_case
    from diffoseg_auto.utilities.file_ops import load_json

    device = torch.device(args.device)
    folds = [f if f == "all" else int(f) for f in args.f]
    nets, plans, cfg_name, diffusion = load_trained_model(args.ged_curve, folds, 1, args.chk, device)
    cfg = plans.get_configuration(cfg_name)
    data_folder = Path(args.data_folder) if args.data_folder else preprocessed_root() / plans.dataset_name / cfg.data_identifier
    cases = args.cases
    if not cases:
        splits = data_folder.parent / "splits_final.json"
        if splits.is_file() and isinstance(folds[0], int):
            cases = sorted(load_json(splits)[folds[0]]["val"])
        else:
            cases = list_preprocessed_cases(data_folder)
        cases = cases[: args.max_cases]
    pred = DiffOSegPredictor(nets, diffusion, cfg, device, use_mirroring=args.tta)
    n = args.num_samples
    curve = {}
    for steps in [s for s in (5, 10, 25, 50, 100, 250) if s <= diffusion.num_timesteps]:
        values, t0 = [], time.perf_counter()
        for case in cases:
            data, seg, mask, _ = load_case(data_folder, case, mmap=False)
            samples = pred.sample_case(data, n, steps, seed=0)
            raters = np.asarray(seg)[np.asarray(mask, bool)]
            per_class = [ged(samples == c, raters == c) for c in range(1, plans.num_classes)]
            values.append(float(np.mean(per_class)))
        curve[steps] = {"GED": float(np.mean(values)), "seconds_per_case": (time.perf_counter() - t0) / len(cases)}
        print(f"S={steps:4d}: GED {curve[steps]['GED']:.4f}  ({curve[steps]['seconds_per_case']:.2f} s per case, "
              f"{len(cases)} cases, {n} samples)")
    return {"model_folder": str(args.ged_curve), "cases": cases, "num_samples": n, "curve": curve}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num_samples", type=int, default=10, help="samples per image (default: 10)")
    p.add_argument("--steps", type=int, default=None, help="our sampling steps S (default: the planned S)")
    p.add_argument("--quick", action="store_true", help="reference: time a few steps and extrapolate to 250 (says so)")
    p.add_argument("--budget_minutes", type=float, default=4.0,
                   help="without --quick, skip the full 250-step reference run when it would take longer (default: 4)")
    p.add_argument("--tta", action="store_true", help="mirroring TTA for both (default: off)")
    p.add_argument("--our_checkpoint", default=None, help="Stage I checkpoint for our configuration (default: random weights)")
    p.add_argument("--reference_checkpoint", default=None, help="checkpoint of the reference network (default: random)")
    p.add_argument("--ged_curve", default=None, metavar="MODEL_FOLDER", help="GED vs sampling steps for a trained model folder")
    p.add_argument("-f", nargs="+", default=["0"], help="folds of the model folder (--ged_curve)")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (--ged_curve)")
    p.add_argument("--data_folder", default=None, help="preprocessed data folder (default: from the plans)")
    p.add_argument("--cases", nargs="*", default=None, help="validation cases (default: the fold's validation split)")
    p.add_argument("--max_cases", type=int, default=10, help="at most this many default cases (default: 10)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    result = run_ged_curve(args) if args.ged_curve else run_speed(args)
    if args.json:
        from diffoseg_auto.utilities.file_ops import save_json

        save_json(result, args.json)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # planners/ when run from a checkout
    main()
