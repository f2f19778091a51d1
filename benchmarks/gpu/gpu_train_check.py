"""Training throughput at the planned configurations, for benchmarks/gpu/gpu_check.sh.

LIDC 2d fold 0 (converted from the shared LIDC subset) and a 3D toy dataset's 3d_fullres: plan and
preprocess, then train Stage I and Stage II, each for a fixed number of minutes with the plans'
precision ('auto': bf16 autocast on a GPU with native bf16), and report per stage: iterations/s, training
samples/s (iterations x batch), peak GPU memory, and the projected wall time of the full planned schedule
(planned epochs x iterations / iterations per second; the per-epoch validation loss and the final
validation sampling are not included). --quick (gpu_check.sh's quick mode, at most 4 minutes with the CUDA
tests): the 3D toy only takes one Stage I step, on fewer cases. Writes one JSON file.

    python benchmarks/gpu/gpu_train_check.py --out $OUT/gpu_check.json --minutes 1
    python benchmarks/gpu/gpu_train_check.py --out $OUT/gpu_check.json --minutes 0.5 --quick
    python benchmarks/gpu/gpu_train_check.py --out /tmp/x.json --dry_run [--quick]   # CPU, tiny sizes, seconds
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

if not __package__:  # run by path, not with -m: make the package `benchmarks` importable (benchmarks/README.md)
    sys.path.append(str(Path(__file__).resolve().parents[2]))

import numpy as np
from benchmarks.lib.bench_lib import set_env

ROOT = Path(__file__).resolve().parents[2]
LIDC_NPZ_CANDIDATES = (ROOT / ".whl" / "data" / "lidc_subset.npz", ROOT.parent / "shared" / "data" / "lidc_subset" / "lidc_subset.npz")


def lidc_npz() -> Path:
    """The LIDC subset: carried to the GPU machine in .whl/data (fetch_wheels.sh), else the shared folder."""
    for p in LIDC_NPZ_CANDIDATES:
        if p.is_file():
            return p
    raise FileNotFoundError(f"LIDC subset not found at {[str(p) for p in LIDC_NPZ_CANDIDATES]}; run benchmarks/gpu/fetch_wheels.sh")


def shrink_for_dry_run(plans_file: Path, configuration: str) -> None:
    """Tiny network, patch and batch: the same code path in seconds on a CPU."""
    from diffoseg_auto.plans.plans import load_plans, save_plans

    plans = load_plans(plans_file)
    c = plans.configurations[configuration]
    d = c.spatial_dims
    a = c.architecture
    a.n_stages, a.features_per_stage = 2, [4, 8]
    a.kernel_sizes, a.strides = [[3] * d] * 2, [[1] * d, [2] * d]
    a.n_conv_per_stage, a.n_conv_per_stage_decoder = [1, 1], [1]
    a.time_embedding_dim, a.prompt_dim = 8, 4
    c.patch_size, c.batch_size = [16] * d, 2
    save_plans(plans, plans_file)


def train_stage(dataset: str, configuration: str, stage: int, minutes: float, dry_run: bool, device: str,
                steps: int | None = None) -> dict:
    """One stage for ``minutes`` (dry run: 2 iterations), or for exactly ``steps`` iterations."""
    import torch

    from diffoseg_auto.training.run_training import run_training
    from diffoseg_auto.training.training_request import ScheduleOverrides, TimeBudget, TrainingRequest

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    budget = TimeBudget()
    if steps is not None:
        schedule = ScheduleOverrides(num_epochs=1, iterations_per_epoch=steps, val_iterations=0)
    elif dry_run:
        schedule = ScheduleOverrides(num_epochs=1, iterations_per_epoch=2, val_iterations=1)
    else:
        schedule, budget = ScheduleOverrides(num_epochs=10_000, iterations_per_epoch=25, val_iterations=2), TimeBudget(minutes)
    tr = run_training(TrainingRequest(dataset, configuration, 0, stage=stage, schedule=schedule, budget=budget,
                                      final_validation=False, device=device, overwrite=True,
                                      num_workers=0 if dry_run else min(8, max(1, (os.cpu_count() or 2) - 2))))[0]
    wall = time.time() - t0
    v = tr.logger.values
    starts, ends = v["epoch_start_timestamps"], v["epoch_end_timestamps"]
    epochs = list(range(1 if len(ends) > 1 else 0, len(ends)))  # the first epoch carries start-up and warm-up
    seconds = sum(ends[e] - starts[e] for e in epochs)
    iters = tr.iterations_done - (tr.iterations_per_epoch if epochs and epochs[0] == 1 else 0)  # the last may be cut
    its = iters / seconds if seconds > 0 else float("nan")
    c = tr.cfg
    planned = c.schedule(stage)
    planned_iters = planned.num_epochs * planned.iterations_per_epoch
    return {"stage": stage, "configuration": configuration, "precision": tr.debug_info()["precision"],
            "patch_size": list(c.patch_size), "batch_size": tr.batch_size, "epochs_run": len(ends),
            "iterations_timed": iters, "iterations_per_s": round(its, 3), "samples_per_s": round(its * tr.batch_size, 2),
            "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if cuda else None,
            "planned_iterations": planned_iters, "projected_hours_full_schedule": round(planned_iters / its / 3600, 2),
            "wall_s": round(wall, 1)}


def prepare_lidc(dataset_id: int, dry_run: bool, work: Path) -> None:
    from dataset_conversion.convert_lidc import convert_lidc
    from planners.plan_and_preprocess_entrypoints import plan_and_preprocess

    src = lidc_npz()
    if dry_run:  # 12 crops of 6 patients: enough for 5 folds
        with np.load(src, allow_pickle=True) as z:
            sub = {k: z[k][:12] for k in z.files}
        src = work / "lidc_dry.npz"
        np.savez(src, **sub)
    convert_lidc(src, dataset_id, overwrite=True)
    plan_and_preprocess(["-d", str(dataset_id), "-c", "2d", "-np", "1", "--no_pp"] if dry_run else
                        ["-d", str(dataset_id), "-c", "2d", "-np", "8"])


def prepare_toy3d(dataset_id: int, dry_run: bool, quick: bool) -> None:
    from dataset_conversion.generate_toy_dataset import main as generate
    from planners.plan_and_preprocess_entrypoints import plan_and_preprocess

    cases = "6" if dry_run or quick else "40"  # 6: enough for 5 folds
    generate(["-d", str(dataset_id), "--dim", "3", "--cases", cases, "--size", "16" if dry_run else "64", "--overwrite"])
    plan_and_preprocess(["-d", str(dataset_id), "-c", "3d_fullres", "-np", "1", "--no_pp"] if dry_run else
                        ["-d", str(dataset_id), "-c", "3d_fullres", "-np", "8"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--minutes", type=float, default=1.0, help="training minutes per stage and dataset (default 1)")
    p.add_argument("--dry_run", action="store_true", help="CPU, tiny network and data: checks the code path in seconds")
    p.add_argument("--quick", action="store_true", help="the 3D toy: one Stage I step on 6 cases (gpu_check.sh --quick)")
    p.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    a = p.parse_args()
    import tempfile

    from diffoseg_auto.runtime.device import default_device_name

    device = "cpu" if a.dry_run else default_device_name()
    work = Path(a.work or tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        run_checks(a, device, work)
    finally:
        if a.work is None:  # a temporary folder of converted and preprocessed data
            shutil.rmtree(work, ignore_errors=True)


def run_checks(a: argparse.Namespace, device: str, work: Path) -> None:
    import torch

    set_env(work)
    from diffoseg_auto.paths import preprocessed_dataset_folder
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from planners.plan_and_preprocess_entrypoints import preprocess

    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
              "dry_run": a.dry_run, "quick": a.quick, "minutes_per_stage": None if a.dry_run else a.minutes, "runs": []}
    # (dataset, configuration, preparation, stages, steps per stage: None = minutes / the dry run's 2 iterations)
    plan = ((920, "2d", lambda: prepare_lidc(920, a.dry_run, work), (1, 2), None),
            (921, "3d_fullres", lambda: prepare_toy3d(921, a.dry_run, a.quick), (1,) if a.quick else (1, 2),
             1 if a.quick else None))
    for dataset_id, configuration, prepare, stages, steps in plan:
        t0 = time.time()
        prepare()
        name = resolve_dataset_name(dataset_id)
        if a.dry_run:
            shrink_for_dry_run(preprocessed_dataset_folder(name) / "DiffOSegPlans.json", configuration)
            preprocess(["-d", str(dataset_id), "-c", configuration, "-np", "1"])
        prep_s = round(time.time() - t0, 1)
        for stage in stages:
            r = train_stage(name, configuration, stage, a.minutes, a.dry_run, device, steps)
            r.update(dataset=name, prepare_s=prep_s)
            result["runs"].append(r)
            print(json.dumps(r), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
