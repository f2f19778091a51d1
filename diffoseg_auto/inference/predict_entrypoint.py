"""diffoseg_predict: sample Stage I consensus / uncertainty and Stage II per-rater segmentations for a folder.

Input: raw layout ``<case>_<XXXX><ending>`` (one file per channel). Outputs are written in the
input's geometry; the layout is described in ``diffoseg_auto.inference.export_prediction``.
Preprocessing (-npp) and export (-nps) run in spawned worker processes next to the sampling
(in-process with 1 or for a single case).
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import zlib
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from diffoseg_auto.configuration import default_num_processes
from diffoseg_auto.dataset.raw_dataset import extra_channel_files, list_cases, load_dataset_json
from diffoseg_auto.errors import InvalidArgumentError, UserError
from diffoseg_auto.inference.export_prediction import export_case, mean_one_hot
from diffoseg_auto.inference.model_loading import ModelLoadError, has_stage2, load_trained_model, model_raters
from diffoseg_auto.inference.prediction_outputs import expected_files, failure_report, prepare_output_folder
from diffoseg_auto.inference.predictor import DiffOSegPredictor
from diffoseg_auto.inference.workers import export_job, preprocess_job
from diffoseg_auto.network.baselines import baseline_network_class
from diffoseg_auto.paths import configured_roots
from diffoseg_auto.plans.plans import Plans
from diffoseg_auto.results_layout import CHECKPOINT_FINAL, trainer_folder
from diffoseg_auto.runtime.device import DEVICE_CHOICES, device_problem, resolve_device
from diffoseg_auto.runtime.precision import PRECISIONS, precision_name
from diffoseg_auto.utilities.argument_checks import at_least, raise_problems
from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
from diffoseg_auto.utilities.run_lock import RunLock
from diffoseg_auto.utilities.worker_lifeline import watch_parent

logger = logging.getLogger(__name__)


class PredictionError(UserError, RuntimeError):
    """Bad prediction request (the message says what to change)."""


def _dataset_json_for(model_folder: Path, dataset_name: str) -> dict:
    """dataset.json copy of the model folder, else the preprocessed or raw one (file ending, channels)."""
    roots = configured_roots()
    candidates = [model_folder / "dataset.json"] + [roots[k] / dataset_name / "dataset.json"
                                                    for k in ("preprocessed", "raw") if k in roots]
    for c in candidates:
        if c.is_file():
            return load_dataset_json(c.parent)
    raise PredictionError(f"No dataset.json found (looked at {', '.join(map(str, candidates))}); it gives the file ending. "
                          "Copy the dataset's dataset.json into the model folder.")


def _select_raters(raters: str | Sequence[str] | None, model_raters: Sequence[str], stage2_available: bool,
                   model_folder: Path) -> list[str]:
    """The requested raters among ``model_raters`` (the dataset's, plus any diffoseg_add_rater added)."""
    model_raters = list(model_raters)
    if raters is None:
        return model_raters if stage2_available else []
    if isinstance(raters, str):
        raters = [raters]
    raters = list(raters)
    if raters == ["none"]:
        return []
    chosen = model_raters if raters == ["all"] else raters
    unknown = [r for r in chosen if r not in model_raters]
    if unknown:
        raise PredictionError(f"--raters: unknown rater(s) {unknown}. This model's raters: {model_raters} (or 'all' / 'none').")
    if not stage2_available:
        raise PredictionError(f"--raters {' '.join(raters)}: {model_folder} has no Stage II (per-rater) model for the requested "
                              "folds. Train Stage II, or predict the consensus only with --raters none.")
    return chosen


def _case_seed(seed: int, key: str) -> int:
    # per case (and rater), independent of the order and the subset of cases predicted
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (2 ** 63)


def _record_failure(failures: dict[str, str], case: str, error: Exception) -> None:
    """Note a failed case and go on; an unexpected error (a bug, not bad input) also logs its traceback."""
    failures[case] = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    logger.warning(f"diffoseg_predict: {case} failed, skipped: {failures[case]}",
                   exc_info=None if isinstance(error, UserError) else error)


def _iter_preprocessed(jobs: list[tuple], num_processes: int,
                       failures: dict[str, str]) -> Iterator[tuple[str, np.ndarray, dict]]:
    """Preprocessed cases in order, failed ones recorded in ``failures`` and left out; with workers, at most
    num_processes + 1 cases are held ahead."""
    if num_processes <= 1 or len(jobs) <= 1:
        for job in jobs:
            try:
                result = preprocess_job(job)
            except Exception as e:  # one bad case must not stop the others
                _record_failure(failures, job[2], e)
                continue
            yield result
        return
    with mp.get_context("spawn").Pool(min(num_processes, len(jobs)), initializer=watch_parent,
                                      initargs=(os.getpid(),)) as pool:
        it = iter(jobs)
        pending = deque((j[2], pool.apply_async(preprocess_job, (j,))) for j in islice(it, num_processes + 1))
        while pending:
            case, handle = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt[2], pool.apply_async(preprocess_job, (nxt,))))
            try:
                result = handle.get()
            except Exception as e:
                _record_failure(failures, case, e)
                continue
            yield result


class _Exporter:
    """Runs export_case in-process or in a spawned pool, bounding the queue so memory stays flat."""

    def __init__(self, num_processes: int, num_cases: int, failures: dict[str, str]):
        self.pool = (mp.get_context("spawn").Pool(min(num_processes, num_cases), initializer=watch_parent,
                                                  initargs=(os.getpid(),))
                     if num_processes > 1 and num_cases > 1 else None)
        self.max_pending = 2 * max(1, num_processes)
        self.pending: deque = deque()
        self.failures = failures

    def submit(self, kwargs: dict) -> None:
        if self.pool is None:
            try:
                export_case(**kwargs)
            except Exception as e:
                _record_failure(self.failures, kwargs["case"], e)
            return
        while len(self.pending) >= self.max_pending:
            self._collect_one()
        self.pending.append((kwargs["case"], self.pool.apply_async(export_job, (kwargs,))))

    def _collect_one(self) -> None:
        case, handle = self.pending.popleft()
        try:
            handle.get()
        except Exception as e:
            _record_failure(self.failures, case, e)

    def __enter__(self) -> "_Exporter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.pool is None:
            return
        try:
            if exc_type is None:
                while self.pending:
                    self._collect_one()
            self.pool.close() if exc_type is None else self.pool.terminate()
            self.pool.join()
        finally:
            self.pool = None


# ------------------------------------------------------------------ the function form


def check_request(input_folder: str | Path, output_folder: str | Path, dataset: str | int, trainer: str, plans: str,
                  configuration: str, model_folder: str | Path | None, *, num_samples: int | None, step_size: float,
                  num_processes_preprocessing: int | None, num_processes_export: int | None,
                  continue_prediction: bool, overwrite: bool, sampling_steps: int | None = None,
                  rater_num_samples: int | None = None,
                  device: str | torch.device | None = None) -> tuple[Path, Path, str, Path]:
    """Every argument problem at once, before any file is touched; then (input folder, output folder,
    DatasetXXX_Name, model folder) of the request."""
    raise_problems([
        device_problem(device),
        at_least("--num_samples", num_samples, 1), at_least("--sampling_steps", sampling_steps, 1),
        at_least("--rater_num_samples", rater_num_samples, 1),
        None if 0 < step_size <= 1 else f"-step_size must be in (0, 1], got {step_size}.",
        at_least("-npp", num_processes_preprocessing, 1), at_least("-nps", num_processes_export, 1),
        "--continue_prediction and --overwrite exclude each other." if continue_prediction and overwrite else None,
    ])
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    if not input_folder.is_dir():
        raise PredictionError(f"{input_folder}: input folder does not exist (-i).")
    if input_folder.resolve() == output_folder.resolve():
        raise PredictionError(f"{output_folder}: output folder must differ from the input folder (-o).")
    dataset_name = resolve_dataset_name(dataset)
    model_folder = Path(model_folder) if model_folder is not None else trainer_folder(dataset_name, trainer, plans, configuration)
    return input_folder, output_folder, dataset_name, model_folder


def input_cases(input_folder: Path, model_folder: Path, dataset_name: str,
                num_channels: int) -> tuple[str, dict[str, list[Path]]]:
    """The dataset's file ending and the input images per case (an error when there are none, or when
    there are channels the model does not take)."""
    ending = _dataset_json_for(model_folder, dataset_name)["file_ending"]
    cases = list_cases(input_folder, ending, num_channels)
    if not cases:
        raise PredictionError(f"{input_folder}: no images named <case>_0000{ending} found. Inputs use the raw layout "
                              "(see documentation/dataset_format.md).")
    extra = extra_channel_files(input_folder, ending, num_channels)
    if extra:
        raise PredictionError(f"{extra[0]}{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}: channel beyond the "
                              f"{num_channels} channel(s) this model takes. Remove the extra channel files "
                              "or predict with a model trained on them.")
    return ending, cases


def predict_from_folder(input_folder: str | Path, output_folder: str | Path, dataset: str | int, configuration: str,
                        folds: Sequence[int | str], trainer: str = "DiffOSegTrainer", plans: str = "DiffOSegPlans",
                        num_samples: int | None = None, sampling_steps: int | None = None,
                        raters: str | Sequence[str] | None = None, rater_num_samples: int | None = None,
                        save_probabilities: bool = False, save_samples: bool = False,
                        checkpoint_name: str = CHECKPOINT_FINAL, step_size: float = 0.5, use_mirroring: bool | None = None,
                        device: str | torch.device | None = None, num_processes_preprocessing: int | None = None,
                        num_processes_export: int | None = None, seed: int = 0,
                        model_folder: str | Path | None = None, continue_prediction: bool = False,
                        overwrite: bool = False, precision: str | None = None, compile_network: bool = False) -> list[str]:
    """Predict every case of ``input_folder`` into ``output_folder``; returns the case identifiers.

    ``raters``: None = all raters when a Stage II model exists (else none); 'all'; 'none'; or rater names.
    ``num_samples`` / ``sampling_steps`` / ``rater_num_samples`` default to the plans (diffusion.num_samples /
    sampling_steps, stage2.num_samples_per_rater).
    ``model_folder`` overrides $diffoseg_results/<dataset>/<trainer>__<plans>__<configuration>.
    ``continue_prediction`` skips finished cases of an earlier run with the same settings; ``overwrite``
    deletes an earlier run's outputs first (without either, such a folder is refused). A case that fails is
    reported and skipped; PredictionIncompleteError lists the failures after all other cases are written.
    A baseline ``trainer`` (network.baselines) is predicted by inference.baseline_prediction (same outputs and
    output-folder rules; ``sampling_steps`` and ``rater_num_samples`` do not apply).
    ``device`` None = CUDA when available, else the CPU; ``precision`` None = the plans' inference.precision;
    ``use_mirroring`` None = the plans' inference.use_mirroring for DiffOSeg (planned off: results.md), on for
    the deterministic baselines (their mirroring costs 4x once, not 4x per step and sample).
    """
    if baseline_network_class(trainer) is not None:  # single-stage baselines: no diffusion sampling
        from diffoseg_auto.inference.baseline_prediction import predict_baseline_from_folder

        return predict_baseline_from_folder(input_folder, output_folder, dataset, configuration, folds, trainer, plans,
                                            num_samples, raters, save_probabilities, save_samples, checkpoint_name,
                                            step_size, use_mirroring, device, num_processes_preprocessing,
                                            num_processes_export, seed, model_folder, continue_prediction, overwrite)
    input_folder, output_folder, dataset_name, model_folder = check_request(
        input_folder, output_folder, dataset, trainer, plans, configuration, model_folder, num_samples=num_samples,
        step_size=step_size, num_processes_preprocessing=num_processes_preprocessing,
        num_processes_export=num_processes_export, continue_prediction=continue_prediction, overwrite=overwrite,
        sampling_steps=sampling_steps, rater_num_samples=rater_num_samples, device=device)
    device = resolve_device(device)
    folds = list(folds)
    npp = default_num_processes() if num_processes_preprocessing is None else int(num_processes_preprocessing)
    nps = default_num_processes() if num_processes_export is None else int(num_processes_export)

    nets1, plans_obj, config_name, diffusion = load_trained_model(model_folder, folds, 1, checkpoint_name, device,
                                                                  expected_dataset=dataset_name)
    if config_name != configuration:
        raise ModelLoadError(f"{model_folder}: checkpoints were trained with configuration '{config_name}', not '{configuration}' (-c).")
    cfg = plans_obj.get_configuration(config_name)
    use_mirroring = cfg.inference.use_mirroring if use_mirroring is None else bool(use_mirroring)
    stage2_available = has_stage2(model_folder, folds, checkpoint_name)
    all_raters = model_raters(model_folder, folds, plans_obj.raters, checkpoint_name) if stage2_available else list(plans_obj.raters)
    chosen_raters = _select_raters(raters, all_raters, stage2_available, model_folder)
    num_samples = int(cfg.diffusion.num_samples if num_samples is None else num_samples)
    sampling_steps = int(cfg.diffusion.sampling_steps if sampling_steps is None else sampling_steps)
    rater_num_samples = int(cfg.stage2.num_samples_per_rater if rater_num_samples is None else rater_num_samples)

    run = dict(precision=precision, compile_network=compile_network)
    predictor1 = DiffOSegPredictor(nets1, diffusion, cfg, device, use_mirroring, step_size, **run)
    predictor2 = None
    if chosen_raters:
        nets2, _, _, diffusion2 = load_trained_model(model_folder, folds, 2, checkpoint_name, device, expected_dataset=dataset_name)
        predictor2 = DiffOSegPredictor(nets2, diffusion2, cfg, device, use_mirroring, step_size, **run)

    ending, cases = input_cases(input_folder, model_folder, dataset_name, plans_obj.num_input_channels)
    settings = {"dataset": dataset_name, "model_folder": str(model_folder), "configuration": config_name, "folds": folds,
                "checkpoint_name": checkpoint_name, "num_samples": num_samples, "sampling_steps": sampling_steps,
                "raters": chosen_raters, "rater_num_samples": rater_num_samples, "step_size": step_size,
                "use_mirroring": use_mirroring, "seed": seed, "save_probabilities": save_probabilities,
                "save_samples": save_samples, "precision": precision_name(predictor1.amp_dtype)}
    rater_ids = [all_raters.index(r) for r in chosen_raters]

    def sample(case: str, data: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        samples = predictor1.sample_case(data, num_samples, sampling_steps, seed=_case_seed(seed, case))
        if predictor2 is None:
            return samples, None
        per_rater = predictor2.sample_raters(data, rater_ids, rater_num_samples, sampling_steps,
                                             seed=_case_seed(seed, case + "/stage2"))
        return samples, dict(zip(chosen_raters, per_rater))

    return predict_cases(sample, output_folder, settings, cases, ending, plans_obj, config_name, chosen_raters,
                         save_probabilities, save_samples, continue_prediction, overwrite, npp, nps)


def predict_cases(predict_case: Callable[[str, np.ndarray], tuple[np.ndarray, dict[str, np.ndarray] | None]],
                  output_folder: Path, settings: dict, cases: dict[str, list[Path]], ending: str, plans_obj: Plans,
                  config_name: str, chosen_raters: list[str], save_probabilities: bool, save_samples: bool,
                  continue_prediction: bool, overwrite: bool, npp: int, nps: int, desc: str = "predict") -> list[str]:
    """The run of a prediction, whatever the model: lock ``output_folder``, check it (prepare_output_folder),
    skip the finished cases (``continue_prediction``), preprocess, ``predict_case(case, data)`` -> (samples,
    {rater: samples} or None), export; a failing case is reported and skipped (PredictionIncompleteError at
    the end). Returns the case identifiers."""
    cfg = plans_obj.get_configuration(config_name)
    with RunLock(output_folder, "diffoseg_predict"):
        prepare_output_folder(output_folder, settings, continue_prediction, overwrite)
        todo = [c for c in cases if not (continue_prediction and all(f.is_file() for f in expected_files(
            output_folder, c, ending, chosen_raters, save_probabilities, save_samples)))]
        if len(todo) < len(cases):
            logger.info(f"--continue_prediction: {len(cases) - len(todo)} finished case(s) skipped, {len(todo)} to predict")
        jobs = [(plans_obj, config_name, case, [str(f) for f in cases[case]]) for case in todo]
        K = plans_obj.num_classes
        failures: dict[str, str] = {}
        with _Exporter(nps, len(jobs), failures) as exporter:
            for case, data, properties in tqdm(_iter_preprocessed(jobs, npp, failures), total=len(jobs), desc=desc):
                try:
                    samples, rater_samples = predict_case(case, data)
                except Exception as e:  # e.g. out of memory on one large case: the others still get predicted
                    _record_failure(failures, case, e)
                    continue
                exporter.submit(dict(case=case, output_folder=output_folder, file_ending=ending, properties=properties,
                                     configuration=cfg, num_classes=K, consensus_probabilities=mean_one_hot(samples, K),
                                     samples=samples if save_samples else None, rater_samples=rater_samples,
                                     save_probabilities=save_probabilities))
    if failures:
        raise failure_report(dict(sorted(failures.items())), len(cases), output_folder)
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
    p.add_argument("-tr", default="DiffOSegTrainer",
                   help="trainer name (default: DiffOSegTrainer); a baseline (ConsensusUNetTrainer, MultiHeadUNetTrainer, "
                        "ProbUNetTrainer) is predicted by sliding windows, --sampling_steps and --rater_num_samples do "
                        "not apply to it")
    p.add_argument("-p", default="DiffOSegPlans", help="plans identifier (default: DiffOSegPlans)")
    p.add_argument("--num_samples", type=int, default=None, help="Stage I samples per case (default: plans diffusion.num_samples)")
    p.add_argument("--sampling_steps", type=int, default=None, help="reverse steps S (default: plans diffusion.sampling_steps)")
    p.add_argument("--raters", nargs="+", default=None,
                   help="Stage II prompts: 'all' (default when a Stage II model exists), 'none', or rater names")
    p.add_argument("--rater_num_samples", type=int, default=None,
                   help="Stage II samples per rater; the rater's mask is the argmax of their mean one-hot "
                        "(default: plans stage2.num_samples_per_rater)")
    p.add_argument("--save_probabilities", action="store_true", help="also write consensus/<case>.npz (float16 probabilities)")
    p.add_argument("--save_samples", action="store_true", help="also write samples/<case>.npz (all Stage I samples)")
    p.add_argument("-chk", default=CHECKPOINT_FINAL, help=f"checkpoint file name (default: {CHECKPOINT_FINAL})")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding-window step as a fraction of the patch (default: 0.5)")
    p.add_argument("--disable_tta", action="store_true",
                   help="no mirroring test-time augmentation (default: the plans' inference.use_mirroring for DiffOSeg, planned "
                        "off; on for the baselines)")
    p.add_argument("-device", default=None,
                   help=f"{', '.join(DEVICE_CHOICES)} or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="network autocast (default: the plans' inference.precision, 'auto' = bf16 where native, else fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the denoiser (slow start; pays on GPUs)")
    p.add_argument("-npp", type=int, default=None, help="preprocessing processes (default: min(2, CPUs))")
    p.add_argument("-nps", type=int, default=None, help="export processes (default: min(2, CPUs))")
    p.add_argument("--seed", type=int, default=0, help="random seed; outputs are reproducible per case (default: 0)")
    p.add_argument("--continue_prediction", action="store_true",
                   help="finish an earlier run into -o with the same settings: cases with all outputs are skipped")
    p.add_argument("--overwrite", action="store_true", help="delete an earlier prediction's outputs in -o first")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    bad = [f for f in args.f if f != "all" and not f.isdigit()]
    if bad:
        raise InvalidArgumentError(f"-f takes fold numbers or 'all', got {bad}")
    folds = [f if f == "all" else int(f) for f in args.f]
    predict_from_folder(args.i, args.o, args.d, args.c, folds, trainer=args.tr, plans=args.p,
                        num_samples=args.num_samples, sampling_steps=args.sampling_steps, raters=args.raters,
                        rater_num_samples=args.rater_num_samples, save_probabilities=args.save_probabilities,
                        save_samples=args.save_samples, checkpoint_name=args.chk, step_size=args.step_size,
                        use_mirroring=False if args.disable_tta else None, device=args.device, num_processes_preprocessing=args.npp,
                        num_processes_export=args.nps, seed=args.seed,
                        continue_prediction=args.continue_prediction, overwrite=args.overwrite,
                        precision=args.precision, compile_network=args.compile)


if __name__ == "__main__":
    main()
