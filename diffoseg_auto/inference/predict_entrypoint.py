"""diffoseg_predict: sample Stage I consensus / uncertainty and Stage II per-rater segmentations for a folder.

Input: raw layout ``<case>_<XXXX><ending>`` (one file per channel). Outputs are written in the
input's geometry; the layout is described in ``diffoseg_auto.inference.export_prediction``.
Preprocessing (-npp) and export (-nps) run in spawned worker processes next to the sampling
(in-process with 1 or for a single case).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import zlib
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from diffoseg_auto.dataset.raw_dataset import DatasetFormatError, list_cases, load_dataset_json
from diffoseg_auto.inference.export_prediction import export_case, mean_one_hot
from diffoseg_auto.inference.model_loading import ModelLoadError, has_stage2, load_trained_model
from diffoseg_auto.inference.predictor import DiffOSegPredictor
from diffoseg_auto.inference.workers import export_job, preprocess_job
from diffoseg_auto.io.image_io import ImageReadError
from diffoseg_auto.paths import EnvironmentVariableNotSetError
from diffoseg_auto.plans.plans import Plans
from diffoseg_auto.runtime.device import DEVICE_CHOICES, DeviceUnavailableError, resolve_device
from diffoseg_auto.runtime.precision import PRECISIONS, PrecisionError, precision_name
from diffoseg_auto.training.checkpointing import CheckpointError
from diffoseg_auto.utilities.dataset_name_id import DatasetNotFoundError, resolve_dataset_name
from diffoseg_auto.utilities.file_ops import save_json


class PredictionError(RuntimeError):
    """Bad prediction request (the message says what to change)."""


def default_num_processes() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def model_folder_for(dataset_name: str, trainer: str, plans: str, configuration: str) -> Path:
    from diffoseg_auto.paths import results_root

    return results_root() / dataset_name / f"{trainer}__{plans}__{configuration}"


def _dataset_json_for(model_folder: Path, dataset_name: str) -> dict:
    """dataset.json copy of the model folder, else the preprocessed or raw one (file ending, channels)."""
    candidates = [model_folder / "dataset.json"]
    for env in ("diffoseg_preprocessed", "diffoseg_raw"):
        if os.environ.get(env):
            candidates.append(Path(os.environ[env]) / dataset_name / "dataset.json")
    for c in candidates:
        if c.is_file():
            return load_dataset_json(c.parent)
    raise PredictionError(f"No dataset.json found (looked at {', '.join(map(str, candidates))}); it gives the file ending. "
                          "Copy the dataset's dataset.json into the model folder.")


def _select_raters(raters: str | Sequence[str] | None, plans: Plans, stage2_available: bool, model_folder: Path) -> list[str]:
    if raters is None:
        return list(plans.raters) if stage2_available else []
    if isinstance(raters, str):
        raters = [raters]
    raters = list(raters)
    if raters == ["none"]:
        return []
    chosen = list(plans.raters) if raters == ["all"] else raters
    unknown = [r for r in chosen if r not in plans.raters]
    if unknown:
        raise PredictionError(f"--raters: unknown rater(s) {unknown}. This model's raters: {plans.raters} (or 'all' / 'none').")
    if not stage2_available:
        raise PredictionError(f"--raters {' '.join(raters)}: {model_folder} has no Stage II (per-rater) model for the requested "
                              "folds. Train Stage II, or predict the consensus only with --raters none.")
    return chosen


def _case_seed(seed: int, key: str) -> int:
    # per case (and rater), independent of the order and the subset of cases predicted
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (2 ** 63)


def _iter_preprocessed(jobs: list[tuple], num_processes: int) -> Iterator[tuple[str, np.ndarray, dict]]:
    """Preprocessed cases in order; with workers, at most num_processes + 1 cases are held ahead."""
    if num_processes <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield preprocess_job(job)
        return
    with mp.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
        it = iter(jobs)
        pending = deque(pool.apply_async(preprocess_job, (j,)) for j in islice(it, num_processes + 1))
        while pending:
            result = pending.popleft().get()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.apply_async(preprocess_job, (nxt,)))
            yield result


class _Exporter:
    """Runs export_case in-process or in a spawned pool, bounding the queue so memory stays flat."""

    def __init__(self, num_processes: int, num_cases: int):
        self.pool = mp.get_context("spawn").Pool(min(num_processes, num_cases)) if num_processes > 1 and num_cases > 1 else None
        self.max_pending = 2 * max(1, num_processes)
        self.pending: deque = deque()

    def submit(self, kwargs: dict) -> None:
        if self.pool is None:
            export_case(**kwargs)
            return
        while len(self.pending) >= self.max_pending:
            self.pending.popleft().get()
        self.pending.append(self.pool.apply_async(export_job, (kwargs,)))

    def __enter__(self) -> "_Exporter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.pool is None:
            return
        try:
            if exc_type is None:
                while self.pending:
                    self.pending.popleft().get()
            self.pool.close() if exc_type is None else self.pool.terminate()
            self.pool.join()
        finally:
            self.pool = None


# ------------------------------------------------------------------ the function form

def predict_from_folder(input_folder: str | Path, output_folder: str | Path, dataset: str | int, configuration: str,
                        folds: Sequence[int | str], trainer: str = "DiffOSegTrainer", plans: str = "DiffOSegPlans",
                        num_samples: int | None = None, sampling_steps: int | None = None,
                        raters: str | Sequence[str] | None = None, rater_num_samples: int = 1,
                        save_probabilities: bool = False, save_samples: bool = False,
                        checkpoint_name: str = "checkpoint_final.pth", step_size: float = 0.5, use_mirroring: bool = True,
                        device: str | torch.device | None = None, num_processes_preprocessing: int | None = None,
                        num_processes_export: int | None = None, seed: int = 0,
                        model_folder: str | Path | None = None, precision: str | None = None,
                        compile_network: bool = False) -> list[str]:
    """Predict every case of ``input_folder`` into ``output_folder``; returns the case identifiers.

    ``raters``: None = all raters when a Stage II model exists (else none); 'all'; 'none'; or rater names.
    ``num_samples`` / ``sampling_steps`` default to the plans (diffusion.num_samples / sampling_steps).
    ``model_folder`` overrides $diffoseg_results/<dataset>/<trainer>__<plans>__<configuration>.
    ``device`` None = CUDA when available, else the CPU; ``precision`` None = the plans' inference.precision.
    """
    device = resolve_device(device)  # first: a missing GPU is reported before anything is read
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    if not input_folder.is_dir():
        raise PredictionError(f"{input_folder}: input folder does not exist (-i).")
    if input_folder.resolve() == output_folder.resolve():
        raise PredictionError(f"{output_folder}: output folder must differ from the input folder (-o).")
    dataset_name = resolve_dataset_name(dataset)
    model_folder = Path(model_folder) if model_folder is not None else model_folder_for(dataset_name, trainer, plans, configuration)
    folds = list(folds)
    npp = default_num_processes() if num_processes_preprocessing is None else int(num_processes_preprocessing)
    nps = default_num_processes() if num_processes_export is None else int(num_processes_export)

    nets1, plans_obj, config_name, diffusion = load_trained_model(model_folder, folds, 1, checkpoint_name, device,
                                                                  expected_dataset=dataset_name)
    if config_name != configuration:
        raise ModelLoadError(f"{model_folder}: checkpoints were trained with configuration '{config_name}', not '{configuration}' (-c).")
    cfg = plans_obj.get_configuration(config_name)
    stage2_available = has_stage2(model_folder, folds, checkpoint_name)
    chosen_raters = _select_raters(raters, plans_obj, stage2_available, model_folder)
    num_samples = int(num_samples or cfg.diffusion.num_samples)
    sampling_steps = int(sampling_steps or cfg.diffusion.sampling_steps)
    if rater_num_samples < 1:
        raise PredictionError(f"rater_num_samples must be >= 1, got {rater_num_samples}")

    run = dict(precision=precision, compile_network=compile_network)
    predictor1 = DiffOSegPredictor(nets1, diffusion, cfg, device, use_mirroring, step_size, **run)
    predictor2 = None
    if chosen_raters:
        nets2, _, _, diffusion2 = load_trained_model(model_folder, folds, 2, checkpoint_name, device, expected_dataset=dataset_name)
        predictor2 = DiffOSegPredictor(nets2, diffusion2, cfg, device, use_mirroring, step_size, **run)

    dj = _dataset_json_for(model_folder, dataset_name)
    ending = dj["file_ending"]
    cases = list_cases(input_folder, ending, plans_obj.num_input_channels)
    if not cases:
        raise PredictionError(f"{input_folder}: no images named <case>_0000{ending} found. Inputs use the raw layout "
                              "(see documentation/dataset_format.md).")
    output_folder.mkdir(parents=True, exist_ok=True)
    save_json({"dataset": dataset_name, "model_folder": str(model_folder), "configuration": config_name, "folds": folds,
               "checkpoint_name": checkpoint_name, "num_samples": num_samples, "sampling_steps": sampling_steps,
               "raters": chosen_raters, "rater_num_samples": rater_num_samples, "step_size": step_size,
               "use_mirroring": use_mirroring, "seed": seed,
               "precision": precision_name(predictor1.amp_dtype)}, output_folder / "prediction_settings.json")

    rater_ids = [plans_obj.raters.index(r) for r in chosen_raters]
    jobs = [(plans_obj, config_name, case, [str(f) for f in files]) for case, files in cases.items()]
    K = plans_obj.num_classes
    with _Exporter(nps, len(jobs)) as exporter:
        for case, data, properties in tqdm(_iter_preprocessed(jobs, npp), total=len(jobs), desc="predict"):
            samples = predictor1.sample_case(data, num_samples, sampling_steps, seed=_case_seed(seed, case))
            rater_samples = None
            if predictor2 is not None:
                # all raters in one chain batch: the windows are encoded once for every prompt
                ids = np.repeat(rater_ids, rater_num_samples)
                rs = predictor2.sample_case(data, len(ids), sampling_steps, rater_id=ids, seed=_case_seed(seed, case + "/stage2"))
                rater_samples = {r: rs[i * rater_num_samples:(i + 1) * rater_num_samples] for i, r in enumerate(chosen_raters)}
            exporter.submit(dict(case=case, output_folder=output_folder, file_ending=ending, properties=properties,
                                 configuration=cfg, num_classes=K, consensus_probabilities=mean_one_hot(samples, K),
                                 samples=samples if save_samples else None, rater_samples=rater_samples,
                                 save_probabilities=save_probabilities))
    return list(cases)


# ------------------------------------------------------------------ command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Sample DiffOSeg predictions for a folder of images: Stage I consensus and "
                                            "uncertainty, Stage II per-rater segmentations, in the input geometry.")
    p.add_argument("-i", required=True, help="input folder, raw layout <case>_<XXXX><ending>")
    p.add_argument("-o", required=True, help="output folder (consensus/, uncertainty/, raters/<rater>/, samples/)")
    p.add_argument("-d", required=True, help="dataset id or name the model was trained on")
    p.add_argument("-c", required=True, help="configuration (2d, 3d_fullres, ...)")
    p.add_argument("-f", nargs="+", required=True, help="fold(s) to ensemble, e.g. -f 0 1 2 3 4 (or 'all')")
    p.add_argument("-tr", default="DiffOSegTrainer", help="trainer name (default: DiffOSegTrainer)")
    p.add_argument("-p", default="DiffOSegPlans", help="plans identifier (default: DiffOSegPlans)")
    p.add_argument("--num_samples", type=int, default=None, help="Stage I samples per case (default: plans diffusion.num_samples)")
    p.add_argument("--sampling_steps", type=int, default=None, help="reverse steps S (default: plans diffusion.sampling_steps)")
    p.add_argument("--raters", nargs="+", default=None,
                   help="Stage II prompts: 'all' (default when a Stage II model exists), 'none', or rater names")
    p.add_argument("--rater_num_samples", type=int, default=1,
                   help="Stage II samples per rater; >1 writes the argmax of their mean one-hot (default: 1)")
    p.add_argument("--save_probabilities", action="store_true", help="also write consensus/<case>.npz (float16 probabilities)")
    p.add_argument("--save_samples", action="store_true", help="also write samples/<case>.npz (all Stage I samples)")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file name (default: checkpoint_final.pth)")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding-window step as a fraction of the patch (default: 0.5)")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring test-time augmentation (faster)")
    p.add_argument("-device", default=None, choices=DEVICE_CHOICES, help="device (default: cuda when available, else cpu)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="network autocast (default: the plans' inference.precision, 'auto' = bf16 where native, else fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the denoiser (slow start; pays on GPUs)")
    p.add_argument("-npp", type=int, default=None, help="preprocessing processes (default: min(2, CPUs))")
    p.add_argument("-nps", type=int, default=None, help="export processes (default: min(2, CPUs))")
    p.add_argument("--seed", type=int, default=0, help="random seed; outputs are reproducible per case (default: 0)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    bad = [f for f in args.f if f != "all" and not f.isdigit()]
    if bad:
        raise SystemExit(f"diffoseg_predict: -f takes fold numbers or 'all', got {bad}")
    folds = [f if f == "all" else int(f) for f in args.f]
    try:
        predict_from_folder(args.i, args.o, args.d, args.c, folds, trainer=args.tr, plans=args.p,
                            num_samples=args.num_samples, sampling_steps=args.sampling_steps, raters=args.raters,
                            rater_num_samples=args.rater_num_samples, save_probabilities=args.save_probabilities,
                            save_samples=args.save_samples, checkpoint_name=args.chk, step_size=args.step_size,
                            use_mirroring=not args.disable_tta, device=args.device, num_processes_preprocessing=args.npp,
                            num_processes_export=args.nps, seed=args.seed, precision=args.precision,
                            compile_network=args.compile)
    except (PredictionError, DeviceUnavailableError, PrecisionError, ModelLoadError, CheckpointError, DatasetFormatError, DatasetNotFoundError, ImageReadError,
            EnvironmentVariableNotSetError) as e:
        raise SystemExit(f"diffoseg_predict: {e}") from None


if __name__ == "__main__":
    main()
