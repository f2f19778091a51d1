"""``run_prediction``: the one run of diffoseg_predict, whatever method the model folder holds.

For a ``PredictionRequest`` (prediction_request.py): check it, load the method's ``CasePredictor``
(case_predictors.py), find the inputs (raw layout ``<case>_<XXXX><ending>``), lock the output folder
and apply its rules (prediction_outputs.py: --continue_prediction / --overwrite), preprocess, predict
and export every case (export_prediction.py: the output layout, in the input's geometry), and write each case's
predicted disagreement (evaluation/disagreement.py: disagreement/<case>.json, for diffoseg_rank_cases). Preprocessing
(-npp) and export (-nps) run in spawned worker processes next to the prediction (in-process with 1 or
for a single case). A case that fails is reported and skipped; PredictionIncompleteError lists the
failures after all other cases are written. A full disk (OSError ENOSPC) is not a case's failure: every later
case would fail the same way, so the run stops with the one line that names the file (run_command), and
--continue_prediction finishes it once space is freed.
"""
from __future__ import annotations

import errno
import logging
import multiprocessing as mp
import os
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from diffoseg_auto.dataset.raw_dataset import extra_channel_files, list_cases, load_dataset_json
from diffoseg_auto.errors import UserError
from diffoseg_auto.evaluation.disagreement import case_disagreement, rater_label_maps, save_case_disagreement
from diffoseg_auto.inference.case_predictors import CasePredictor, load_case_predictor
from diffoseg_auto.inference.export_prediction import ExportTarget, export_case, mean_one_hot
from diffoseg_auto.inference.prediction_cost import PredictionCost, median_preprocessed_shape
from diffoseg_auto.inference.prediction_outputs import expected_files, failure_report, prepare_output_folder
from diffoseg_auto.inference.prediction_request import PredictionError, PredictionRequest
from diffoseg_auto.inference.workers import export_job, preprocess_job
from diffoseg_auto.paths import configured_roots
from diffoseg_auto.plans.plans import Plans
from diffoseg_auto.runtime.device import resolve_device
from diffoseg_auto.utilities.run_lock import RunLock
from diffoseg_auto.utilities.worker_lifeline import watch_parent

logger = logging.getLogger(__name__)


def run_prediction(request: PredictionRequest) -> list[str]:
    """Predict every case of ``request.input_folder`` into ``request.output_folder``; returns the case identifiers."""
    request.validate()
    dataset_name, model_folder = request.locate_model()
    predictor, plans = load_case_predictor(request, dataset_name, model_folder, resolve_device(request.device))
    ending, cases = input_cases(request.input_folder, model_folder, dataset_name, plans.num_input_channels)
    # what the outputs depend on: --continue_prediction only finishes a run with the same settings
    settings = {"dataset": dataset_name, "model_folder": str(model_folder), "configuration": request.configuration,
                "folds": list(request.folds), "checkpoint_name": request.checkpoint_name, "raters": predictor.raters,
                "step_size": request.step_size, "seed": request.seed, "save_probabilities": request.save_probabilities,
                "save_samples": request.save_samples, **predictor.settings}
    return _predict_cases(predictor, request, plans, settings, cases, ending)


def _predict_cases(predictor: CasePredictor, request: PredictionRequest, plans: Plans, settings: dict,
                   cases: dict[str, list[Path]], ending: str) -> list[str]:
    """Lock the output folder, check it, skip the finished cases (--continue_prediction), preprocess, predict and
    export; a failing case is reported and skipped (PredictionIncompleteError at the end)."""
    out, raters, config_name = request.output_folder, predictor.raters, request.configuration
    cfg, K = plans.get_configuration(config_name), plans.num_classes
    npp, nps = request.worker_counts()
    with RunLock(out, "diffoseg_predict"):
        prepare_output_folder(out, settings, request.continue_prediction, request.overwrite)
        todo = [c for c in cases if not (request.continue_prediction and all(f.is_file() for f in expected_files(
            out, c, ending, raters, request.save_probabilities, request.save_samples)))]
        if len(todo) < len(cases):
            logger.info(f"--continue_prediction: {len(cases) - len(todo)} finished case(s) skipped, {len(todo)} to predict")
        jobs = [(plans, config_name, case, [str(f) for f in cases[case]]) for case in todo]
        failures: dict[str, str] = {}
        median = median_preprocessed_shape(plans, config_name)
        median_cost = predictor.prediction_cost(median)
        per_case = median_cost.network_evaluations
        print(planned_cost_line(len(jobs), median_cost), flush=True)
        # the bar counts network evaluations: planned from the median image, corrected as each case's shape is known
        bar = tqdm(total=len(jobs) * per_case, desc=predictor.description, unit="eval", unit_scale=True)
        target = ExportTarget(out, ending, cfg, K, request.save_probabilities)
        with _Exporter(nps, len(jobs), failures) as exporter, bar:
            for case, data, properties in _iter_preprocessed(jobs, npp, failures):
                actual = predictor.prediction_cost(data.shape[1:]).network_evaluations
                bar.total += actual - per_case
                try:
                    samples, rater_samples, soft = predictor.predict_case(case, data)
                    bar.update(actual)
                except Exception as e:  # e.g. out of memory on one large case: the others still get predicted
                    _record_failure(failures, case, e)
                    continue
                # case triage: how much the samples and the per-rater predictions disagree (no labels needed)
                save_case_disagreement(out, case, case_disagreement(samples, rater_label_maps(rater_samples, K), K))
                probabilities = mean_one_hot(samples, K) if soft is None else soft
                exporter.submit(dict(case=case, properties=properties, target=target,
                                     consensus_probabilities=probabilities,
                                     samples=samples if request.save_samples else None, rater_samples=rater_samples))
    if failures:
        raise failure_report(dict(sorted(failures.items())), len(cases), out)
    return list(cases)


def planned_cost_line(num_cases: int, per_case: PredictionCost) -> str:
    """What a run will cost, printed before it starts (issue: the sampling budget stated up front)."""
    n = per_case.network_evaluations
    return (f"planned cost: {num_cases} case(s) x {n:,} network evaluations per median case "
            f"[{per_case.terms()}] = {num_cases * n:,} evaluations")


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


def _record_failure(failures: dict[str, str], case: str, error: Exception) -> None:
    """Note a failed case and go on; an unexpected error (a bug, not bad input) also logs its traceback. A full
    disk stops the run (raised again): the next cases would fail the same way."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        raise error
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
        finished = exc_type is None
        try:
            while finished and self.pending:
                self._collect_one()
        except BaseException:  # a full disk in an export: the other workers' exports are abandoned
            finished = False
            raise
        finally:
            self.pool.close() if finished else self.pool.terminate()
            self.pool.join()
            self.pool = None


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
