"""LIDC sampling speed-up against the paper's reference configuration, measured side by side.

Builds the planned '2d' network and the '2d_paper_reference' network (planners/reference_configuration.py:
the official code's ADM-style U-Net and settings) from one DiffOSegPlans.json, each with its Stage I
random initial weights (time does not depend on the weights), and times drawing ``--num_samples``
Stage I samples of one 128x128 image at each configuration's planned sampling steps (25 against the
paper's 250) through the same DiffOSegPredictor, default precision, no TTA. Both run in this process,
one after the other, on ``--threads`` threads; CPU seconds (process time) and wall seconds are recorded.

    .venv/bin/python benchmarks/sampling_speedup.py --plans /tmp/lidc/preprocessed/Dataset100_LIDC/DiffOSegPlans.json

The plans come from `benchmarks/real_data_comparison.py --prepare lidc` or lidc_equal_budget.py (both
add the reference configuration). Numbers are recorded, nothing passes or fails.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

CONFIGURATIONS = ("2d", "2d_paper_reference")


def time_configuration(plans_file: Path, configuration: str, num_samples: int, steps: int | None,
                       precision: str | None = None, compile_network: bool = False) -> dict:
    """Seconds to draw ``num_samples`` Stage I samples of one image at the planned (or given) steps; the warm-up
    (with ``compile_network``: torch.compile's compilation) is timed separately."""
    import torch

    from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
    from diffoseg_auto.inference.predictor import DiffOSegPredictor
    from diffoseg_auto.network.factory import build_denoiser
    from diffoseg_auto.plans.plans import load_plans

    plans = load_plans(plans_file)
    cfg = plans.get_configuration(configuration)
    torch.manual_seed(0)
    net = build_denoiser(plans, configuration, 1)
    d = cfg.diffusion
    diffusion = CategoricalDiffusion.from_plan(plans.num_classes, d)
    pred = DiffOSegPredictor(net, diffusion, cfg, "cpu", use_mirroring=False, precision=precision,
                             compile_network=compile_network)
    steps = int(steps or d.sampling_steps)
    image = np.random.RandomState(0).randn(plans.num_input_channels, *cfg.patch_size).astype(np.float32)
    t0, c0 = time.time(), time.process_time()
    pred.sample_case(image, num_samples, 2, seed=0)  # warm-up (allocator, oneDNN primitives, compilation)
    warmup = {"warmup_wall_seconds": round(time.time() - t0, 2), "warmup_cpu_seconds": round(time.process_time() - c0, 2)}
    t0, c0 = time.time(), time.process_time()
    pred.sample_case(image, num_samples, steps, seed=0)
    return {"configuration": configuration, "sampling_steps": steps, "num_samples": num_samples,
            "wall_seconds": round(time.time() - t0, 2), "cpu_seconds": round(time.process_time() - c0, 2),
            "parameters_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 2), "precision": precision or "planned",
            "compiled": compile_network, **warmup}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plans", required=True, help="DiffOSegPlans.json holding '2d' and '2d_paper_reference'")
    p.add_argument("--num_samples", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", nargs="+", default=[None], help="autocast per run, e.g. auto fp32 (default: the plans')")
    p.add_argument("--with_compile", action="store_true",
                   help="also ours under torch.compile (--compile of diffoseg_predict); the reference is not compiled")
    p.add_argument("--json_out", default=None)
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    result = {"threads": a.threads, "runs": []}
    for precision in a.precision:
        ours, ref = (time_configuration(Path(a.plans), c, a.num_samples, None, precision) for c in CONFIGURATIONS)
        rows = [ours, ref]
        if a.with_compile:
            compiled = time_configuration(Path(a.plans), CONFIGURATIONS[0], a.num_samples, None, precision, True)
            compiled["speedup_cpu"] = round(ref["cpu_seconds"] / compiled["cpu_seconds"], 1)
            rows.append(compiled)
        result["runs"].append({"precision": precision or "planned", "rows": rows,
                               "speedup_cpu": round(ref["cpu_seconds"] / ours["cpu_seconds"], 1),
                               "speedup_wall": round(ref["wall_seconds"] / ours["wall_seconds"], 1)})
    text = json.dumps(result, indent=2)
    print(text)
    if a.json_out:
        Path(a.json_out).write_text(text)


if __name__ == "__main__":
    main()
