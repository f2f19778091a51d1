"""diffoseg_predict for the baseline trainers: the same inputs, worker processes and output folders
(samples/, consensus/, uncertainty/, raters/<rater>/) as for DiffOSeg, predicted by sliding windows."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from diffoseg_auto.inference.baseline_predictor import BaselinePredictor
from diffoseg_auto.inference.export_prediction import mean_one_hot
from diffoseg_auto.inference.model_loading import ModelLoadError, load_trained_model
from diffoseg_auto.inference.predict_entrypoint import (PredictionError, _case_seed, _Exporter, _iter_preprocessed,
                                                        _select_raters, check_request, default_num_processes,
                                                        input_cases, resolve_device)
from diffoseg_auto.network.baselines import baseline_network_class
from diffoseg_auto.utilities.file_ops import save_json


def predict_baseline_from_folder(input_folder: str | Path, output_folder: str | Path, dataset: str | int,
                                 configuration: str, folds: Sequence[int | str], trainer: str,
                                 plans: str = "DiffOSegPlans", num_samples: int | None = None,
                                 raters: str | Sequence[str] | None = None, save_probabilities: bool = False,
                                 save_samples: bool = False, checkpoint_name: str = "checkpoint_final.pth",
                                 step_size: float = 0.5, use_mirroring: bool = True,
                                 device: str | torch.device = "cuda", num_processes_preprocessing: int | None = None,
                                 num_processes_export: int | None = None, seed: int = 0,
                                 model_folder: str | Path | None = None) -> list[str]:
    """Predict every case of ``input_folder`` with a baseline; returns the case identifiers.

    ``num_samples`` defaults to the plans' diffusion.num_samples, so that every method is scored
    with the same N. ``raters``: None or 'all' = every rater, 'none', or rater names.
    """
    input_folder, output_folder, dataset_name, model_folder = check_request(input_folder, output_folder, dataset, trainer,
                                                                            plans, configuration, model_folder)
    device = resolve_device(device)
    net_cls = baseline_network_class(trainer)
    if net_cls is None:
        raise PredictionError(f"-tr {trainer}: not a baseline trainer; predict it with predict_from_folder.")
    nets, plans_obj, config_name, _ = load_trained_model(model_folder, list(folds), 1, checkpoint_name, device,
                                                         expected_dataset=dataset_name,
                                                         build_network=lambda p, c, _stage: net_cls(p, c))
    if config_name != configuration:
        raise ModelLoadError(f"{model_folder}: checkpoints were trained with configuration '{config_name}', not '{configuration}' (-c).")
    cfg = plans_obj.get_configuration(config_name)
    chosen = _select_raters("all" if raters is None else raters, plans_obj, True, model_folder)
    num_samples = int(num_samples or cfg.diffusion.num_samples)
    predictor = BaselinePredictor(nets, cfg, device, use_mirroring, step_size)
    ending, cases = input_cases(input_folder, model_folder, dataset_name, plans_obj.num_input_channels)
    output_folder.mkdir(parents=True, exist_ok=True)
    save_json({"dataset": dataset_name, "model_folder": str(model_folder), "trainer": trainer, "configuration": config_name,
               "folds": list(folds), "checkpoint_name": checkpoint_name, "num_samples": num_samples, "raters": chosen,
               "step_size": step_size, "use_mirroring": use_mirroring, "seed": seed}, output_folder / "prediction_settings.json")
    npp = default_num_processes() if num_processes_preprocessing is None else int(num_processes_preprocessing)
    nps = default_num_processes() if num_processes_export is None else int(num_processes_export)
    jobs = [(plans_obj, config_name, case, [str(f) for f in files]) for case, files in cases.items()]
    K, all_raters = plans_obj.num_classes, list(plans_obj.raters)
    with _Exporter(nps, len(jobs)) as exporter:
        for case, data, properties in tqdm(_iter_preprocessed(jobs, npp), total=len(jobs), desc=f"predict {trainer}"):
            outputs = predictor.predict_case(data, num_samples, seed=_case_seed(seed, case))
            samples, rater_preds = nets[0].to_predictions(outputs, num_samples, len(all_raters), K)
            rater_samples = {r: rater_preds[all_raters.index(r)][None] for r in chosen}
            exporter.submit(dict(case=case, output_folder=output_folder, file_ending=ending, properties=properties,
                                 configuration=cfg, num_classes=K, consensus_probabilities=mean_one_hot(samples, K),
                                 samples=samples if save_samples else None, rater_samples=rater_samples or None,
                                 save_probabilities=save_probabilities))
    return list(cases)
