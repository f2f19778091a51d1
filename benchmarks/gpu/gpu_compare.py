"""One-call GPU comparison (benchmarks/gpu/gpu_check.sh --compare): LIDC 2d fold 0, the four methods at a fixed number of
GPU seconds each, held-out prediction, the diffoseg_benchmark table and the records; iterations/s per method and the
projected hours of the full planned schedule.

The data: ``--data`` a raw dataset folder (``DatasetXXX_Name`` with dataset.json, imagesTr, labelsTr, as
``diffoseg_convert_lidc`` writes it), an LIDC slices folder (``LIDC-IDRI-XXXX/nodule-N/images/slice-K.png`` and
``mask-0..3/``; converted, its test patients kept out) or an LIDC ``.npz`` (default: the subset that
fetch_wheels.sh copies into .whl/data, else ../shared/data/lidc_subset). The comparison itself is ``real_data.py compare --device cuda``
(benchmarks/quality/real_data_compare.py): this script prepares the data, runs it, and reads the speed from the
checkpoints. --dry_run: the same path on the CPU with a tiny network, 12 crops and a few seconds per method.

    python benchmarks/gpu/gpu_compare.py --out $OUT --seconds 45
    python benchmarks/gpu/gpu_compare.py --out /tmp/x --dry_run
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run by path, not with -m: make the package `benchmarks` importable (benchmarks/README.md)
    sys.path.append(str(Path(__file__).resolve().parents[2]))

import numpy as np

from benchmarks.lib.bench_lib import PLANS, set_env
from benchmarks.gpu.gpu_train_check import lidc_npz, shrink_for_dry_run
from benchmarks.quality.real_data_compare import DEFAULT_TRAINERS

DATASET_ID = 930            # the .npz's dataset id (a raw folder keeps its own)
DRY_RUN_CROPS = 12          # the .npz's first 12 crops, 6 patients: enough for 5 folds
DRY_RUN_PATIENTS = 8        # a slices folder's first 8 patients (those whose number is a multiple of 5 are test)
RAW_FOLDER = re.compile(r"^Dataset(\d{3})_\w+$")


def raw_dataset(data: Path, dry_run: bool, work: Path) -> int:
    """Put ``data`` into $diffoseg_raw: a raw DatasetXXX_Name folder linked under its own name; an LIDC .npz or
    slices folder through the LIDC converter, as Dataset930_LIDC (dry run: a few crops or patients); returns the
    dataset id."""
    from dataset_conversion import convert_lidc
    from diffoseg_auto.paths import raw_root

    m = RAW_FOLDER.match(data.name)
    if data.is_dir() and m and (data / "dataset.json").is_file():
        raw_root().mkdir(parents=True, exist_ok=True)
        (raw_root() / data.name).symlink_to(data.resolve(), target_is_directory=True)
        return int(m.group(1))
    if not (data.suffix == ".npz" and data.is_file() or data.is_dir()):
        raise SystemExit(f"gpu_compare: {data}: give a raw dataset folder DatasetXXX_Name (with dataset.json), an "
                         "LIDC slices folder (LIDC-IDRI-XXXX/nodule-N/...) or an LIDC .npz")
    if dry_run and data.suffix == ".npz":
        with np.load(data, allow_pickle=True) as z:
            sub = {k: z[k][:DRY_RUN_CROPS] for k in z.files}
        data = work / "lidc_dry.npz"
        np.savez(data, **sub)
    convert_lidc.convert_lidc(data, DATASET_ID, overwrite=True, max_patients=DRY_RUN_PATIENTS if dry_run else None)
    return DATASET_ID


def prepare_data(data: Path, dry_run: bool, work: Path) -> int:
    """``raw_dataset``, then plan and preprocess '2d' (dry run: a tiny network); returns the dataset id."""
    from diffoseg_auto.paths import preprocessed_dataset_folder
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from planners.plan_and_preprocess_entrypoints import plan_and_preprocess, preprocess

    dataset_id = raw_dataset(data, dry_run, work)
    processes = "1" if dry_run else str(max(1, min(8, (os.cpu_count() or 2) - 2)))
    plan_and_preprocess(["-d", str(dataset_id), "-c", "2d", "-np", processes] + (["--no_pp"] if dry_run else []))
    if dry_run:
        shrink_for_dry_run(preprocessed_dataset_folder(resolve_dataset_name(dataset_id)) / f"{PLANS}.json", "2d")
        preprocess(["-d", str(dataset_id), "-c", "2d", "-np", "1"])
    return dataset_id


def method_speed(dataset_id: int, trainer: str, iterations_per_epoch: int) -> dict:
    """Iterations/s of each trained stage of fold 0 (its epochs after the first, which carries start-up and
    warm-up; the only one when there is one) and the hours of the planned schedule at that speed (training
    iterations only: the per-epoch validation loss and the end-of-stage validation are not in it)."""
    from diffoseg_auto.io.checkpoint_io import epoch_durations, load_checkpoint
    from diffoseg_auto.plans.plans import load_plans
    from diffoseg_auto.paths import preprocessed_dataset_folder
    from diffoseg_auto.results_layout import checkpoint_path, trainer_folder
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    name = resolve_dataset_name(dataset_id)
    cfg = load_plans(preprocessed_dataset_folder(name) / f"{PLANS}.json").get_configuration("2d")
    planned = {1: cfg.training.num_epochs * cfg.training.iterations_per_epoch,
               2: cfg.stage2.num_epochs * cfg.stage2.iterations_per_epoch}
    out, hours = {}, 0.0
    for stage in (1, 2):
        path = checkpoint_path(trainer_folder(name, trainer, PLANS, "2d"), 0, stage)
        if not path.is_file():
            continue
        ck = load_checkpoint(path)
        durations = epoch_durations(ck["logging"])
        timed = durations[1:] if len(durations) > 1 else durations
        its = iterations_per_epoch * len(timed) / max(sum(timed), 1e-9)
        hours += planned[stage] / its / 3600
        out[f"stage{stage}"] = {"epochs": len(durations), "iterations_timed": iterations_per_epoch * len(timed),
                                "iterations_per_s": round(its, 3), "planned_iterations": planned[stage]}
    return {"stages": out, "projected_hours_full_schedule": round(hours, 3)}


def compare_arguments(a: argparse.Namespace, dataset_id: int, device: str) -> list[str]:
    """real_data.py compare's command line: fold 0, the four methods, --seconds each on the wall clock."""
    args = ["-d", str(dataset_id), "-c", "2d", "-f", "0", "-tr", *DEFAULT_TRAINERS, "--minutes", str(a.seconds / 60),
            "--out", str(Path(a.out) / "compare"), "--record", str(Path(a.out) / "records"), "--device", device,
            "--iterations_per_epoch", str(a.iterations_per_epoch), "--val_iterations", "1"]
    if a.dry_run:
        return args + ["--num_samples", "2", "--sampling_steps", "2"]
    return args + ["--num_workers", str(max(1, min(8, (os.cpu_count() or 2) - 2)))]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for gpu_compare.json, the table (compare/) and records/")
    p.add_argument("--data", default=None,
                   help="raw dataset folder DatasetXXX_Name, LIDC slices folder or LIDC .npz (default: the subset)")
    p.add_argument("--seconds", type=float, default=45.0, help="training seconds per method (DiffOSeg: both stages)")
    p.add_argument("--iterations_per_epoch", type=int, default=50,
                   help="the seconds are checked after every epoch (default 50)")
    p.add_argument("--dry_run", action="store_true", help="CPU, tiny network, 12 crops: the code path in a minute")
    p.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    if a.dry_run and a.iterations_per_epoch == 50:
        a.iterations_per_epoch = 2
    import torch

    from benchmarks.quality import real_data

    device = "cpu" if a.dry_run or not torch.cuda.is_available() else "cuda"
    work = Path(a.work or tempfile.mkdtemp(prefix="gpu_compare_"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    set_env(work)
    t0 = time.time()
    try:
        dataset_id = prepare_data(Path(a.data) if a.data else lidc_npz(), a.dry_run, work)
        t_prep = time.time()
        real_data.main(["compare", *compare_arguments(a, dataset_id, device)])
        run = json.loads((out / "compare" / "run.json").read_text())
        report = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "dry_run": a.dry_run,
                  "data": str(a.data or lidc_npz()), "seconds_per_method": a.seconds,
                  "iterations_per_epoch": a.iterations_per_epoch, "steps_seconds": {
                      "prepare": round(t_prep - t0, 1), "compare": round(time.time() - t_prep, 1)}, "methods": {}}
        for trainer in DEFAULT_TRAINERS:
            entry = run["methods"].get(trainer, {}).get("0", {})
            report["methods"][trainer] = {**method_speed(dataset_id, trainer, a.iterations_per_epoch),
                                          "prediction": entry.get("prediction"), "error": entry.get("error")}
            m = report["methods"][trainer]
            its = ", ".join(f"{k} {v['iterations_per_s']} it/s" for k, v in m["stages"].items())
            print(f"gpu_compare: {trainer}: {its}; full planned schedule ~{m['projected_hours_full_schedule']} h",
                  flush=True)
        (out / "gpu_compare.json").write_text(json.dumps(report, indent=2))
    finally:
        if a.work is None:  # converted, preprocessed and trained data; the table and records stay in --out
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
