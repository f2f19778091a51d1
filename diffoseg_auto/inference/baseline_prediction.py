"""diffoseg_predict for the baseline trainers: the same inputs, argument checks, output-folder rules
(--continue_prediction / --overwrite, run lock), worker processes, per-case failure handling and output
folders (samples/, consensus/, uncertainty/, raters/<rater>/) as for DiffOSeg (predict_entrypoint.predict_cases),
predicted by sliding windows."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from diffoseg_auto.configuration import default_num_processes
from diffoseg_auto.inference.baseline_predictor import BaselinePredictor
from diffoseg_auto.inference.model_loading import ModelLoadError, load_trained_model
from diffoseg_auto.inference.predict_entrypoint import (PredictionError, _case_seed, _select_raters, check_request,
                                                        input_cases, predict_cases, resolve_device)
from diffoseg_auto.network.baselines import baseline_network_class
from diffoseg_auto.results_layout import CHECKPOINT_FINAL


def predict_baseline_from_folder(input_folder: str | Path, output_folder: str | Path, dataset: str | int,
                                 configuration: str, folds: Sequence[int | str], trainer: str,
                                 plans: str = "DiffOSegPlans", num_samples: int | None = None,
                                 raters: str | Sequence[str] | None = None, save_probabilities: bool = False,
                                 save_samples: bool = False, checkpoint_name: str = CHECKPOINT_FINAL,
                                 step_size: float = 0.5, use_mirroring: bool | None = None,
                                 device: str | torch.device = "cuda", num_processes_preprocessing: int | None = None,
                                 num_processes_export: int | None = None, seed: int = 0,
                                 model_folder: str | Path | None = None, continue_prediction: bool = False,
                                 overwrite: bool = False) -> list[str]:
    """Predict every case of ``input_folder`` with a baseline; returns the case identifiers.

    ``num_samples`` defaults to the plans' diffusion.num_samples, so that every method is scored
    with the same N. ``raters``: None or 'all' = every rater, 'none', or rater names.
    ``continue_prediction`` / ``overwrite``: as predict_from_folder.
    """
    input_folder, output_folder, dataset_name, model_folder = check_request(
        input_folder, output_folder, dataset, trainer, plans, configuration, model_folder, num_samples=num_samples,
        step_size=step_size, num_processes_preprocessing=num_processes_preprocessing,
        num_processes_export=num_processes_export, continue_prediction=continue_prediction, overwrite=overwrite)
    device = resolve_device(device)
    net_cls = baseline_network_class(trainer)
    if net_cls is None:
        raise PredictionError(f"-tr {trainer}: not a baseline trainer; predict it with predict_from_folder.")
    folds = list(folds)
    nets, plans_obj, config_name, _ = load_trained_model(model_folder, folds, 1, checkpoint_name, device,
                                                         expected_dataset=dataset_name,
                                                         build_network=lambda p, c, _stage: net_cls(p, c))
    if config_name != configuration:
        raise ModelLoadError(f"{model_folder}: checkpoints were trained with configuration '{config_name}', not '{configuration}' (-c).")
    cfg = plans_obj.get_configuration(config_name)
    chosen = _select_raters("all" if raters is None else raters, plans_obj.raters, True, model_folder)
    num_samples = int(cfg.diffusion.num_samples if num_samples is None else num_samples)
    use_mirroring = True if use_mirroring is None else bool(use_mirroring)  # nnU-Net's default for a U-Net
    predictor = BaselinePredictor(nets, cfg, device, use_mirroring, step_size)
    ending, cases = input_cases(input_folder, model_folder, dataset_name, plans_obj.num_input_channels)
    settings = {"dataset": dataset_name, "model_folder": str(model_folder), "trainer": trainer,
                "configuration": config_name, "folds": folds, "checkpoint_name": checkpoint_name,
                "num_samples": num_samples, "raters": chosen, "step_size": step_size, "use_mirroring": use_mirroring,
                "seed": seed, "save_probabilities": save_probabilities, "save_samples": save_samples}
    npp = default_num_processes() if num_processes_preprocessing is None else int(num_processes_preprocessing)
    nps = default_num_processes() if num_processes_export is None else int(num_processes_export)
    K, all_raters = plans_obj.num_classes, list(plans_obj.raters)

    def predict(case: str, data: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        outputs = predictor.predict_case(data, num_samples, seed=_case_seed(seed, case))
        samples, rater_preds = nets[0].to_predictions(outputs, num_samples, len(all_raters), K)
        return samples, {r: rater_preds[all_raters.index(r)][None] for r in chosen} or None

    return predict_cases(predict, output_folder, settings, cases, ending, plans_obj, config_name, chosen,
                         save_probabilities, save_samples, continue_prediction, overwrite, npp, nps,
                         desc=f"predict {trainer}")
