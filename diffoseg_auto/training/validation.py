"""End-of-stage validation: sample every validation case with the EMA network and score it against its raters."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from diffoseg_auto.evaluation.metrics import CaseScoring, evaluate_case, summarize
from diffoseg_auto.inference.export_prediction import ExportTarget, export_case, mean_one_hot
from diffoseg_auto.plans.plans import ConfigurationPlan, Plans
from diffoseg_auto.preprocessing.case_storage import load_case
from diffoseg_auto.utilities.file_ops import save_json


def consensus_from_samples(samples: np.ndarray, num_classes: int) -> np.ndarray:
    """Argmax of the mean one-hot over samples (N,*S) -> (*S) uint8 (ties -> lower class)."""
    return np.argmax(mean_one_hot(samples, num_classes), axis=0).astype(np.uint8)


@dataclass(frozen=True)
class ValidationJob:
    """What an end-of-stage validation predicts and where it writes (DiffOSeg's and the baselines')."""

    data_folder: Path                # preprocessed cases (data, rater labels, properties)
    cases: list[str]
    output_folder: Path              # summary.json, and the exported predictions
    file_ending: str | None = None   # the raw images' ending: also export in their geometry (None: scores only)
    mode: str = "strict"             # evaluation.metrics' handling of raters who did not annotate a case

    def export_target(self, configuration: ConfigurationPlan, num_classes: int) -> ExportTarget | None:
        """Where and how the predictions are exported; None when they are only scored (no file ending)."""
        if not self.file_ending:
            return None
        return ExportTarget(self.output_folder, self.file_ending, configuration, num_classes)


def validate_cases(network: nn.Module, diffusion, plans: Plans, configuration: ConfigurationPlan, stage: int,
                   device: torch.device, job: ValidationJob) -> dict:
    """Stage 1: the configuration's training.num_val_samples samples per case (+ their consensus). Stage 2:
    training.val_samples_per_rater (default stage2.num_samples_per_rater) samples per rater prompt; the rater's
    prediction is the argmax of their mean one-hot (as diffoseg_predict writes it). Sampling takes
    training.val_sampling_steps (default diffusion.sampling_steps) steps. Writes
    ``job.output_folder/summary.json`` (atomic) and returns the summary. With ``job.file_ending`` the
    predictions are also exported in the raw images' geometry (samples/, consensus/, uncertainty/,
    raters/ as diffoseg_predict writes them), for diffoseg_evaluate and diffoseg_benchmark --figures."""
    from diffoseg_auto.inference.predictor import DiffOSegPredictor, PredictorSettings

    network.eval()
    predictor = DiffOSegPredictor(network, diffusion, configuration, device,
                                  PredictorSettings(configuration.inference.use_mirroring,
                                                    configuration.inference.step_size))
    num_classes, raters, mode = plans.num_classes, list(plans.raters), job.mode
    sampling_steps = configuration.training.val_sampling_steps or configuration.diffusion.sampling_steps
    samples_per_rater = configuration.training.val_samples_per_rater or configuration.stage2.num_samples_per_rater
    target = job.export_target(configuration, num_classes)
    per_case = []
    for i, case in enumerate(tqdm(job.cases, desc=f"validation stage {stage}")):
        data, seg, rater_mask, properties = load_case(job.data_folder, case, mmap=False)
        if stage == 1:
            samples = predictor.sample_case(data, configuration.training.num_val_samples, sampling_steps, seed=i)
            res = evaluate_case(samples, seg, rater_mask, num_classes,
                                consensus=consensus_from_samples(samples, num_classes),
                                scoring=CaseScoring(mode, calibration=True))
            if target is not None:
                export_case(case, properties, target, consensus_probabilities=mean_one_hot(samples, num_classes),
                            samples=samples)
        else:
            per_rater = dict(zip(raters, predictor.sample_raters(data, range(len(raters)),
                                                                 samples_per_rater,
                                                                 sampling_steps, seed=i)))
            preds = np.stack([consensus_from_samples(v, num_classes) for v in per_rater.values()])
            res = evaluate_case(None, seg, rater_mask, num_classes, rater_predictions=preds,
                                scoring=CaseScoring(mode))
            if target is not None:
                export_case(case, properties, target, rater_samples=per_rater)
        per_case.append({"case": case, **res})
    summary = summarize(per_case, raters, mode)
    save_json(summary, Path(job.output_folder) / "summary.json")
    return summary
