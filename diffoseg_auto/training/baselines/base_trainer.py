"""What the baseline trainers share: one stage (Stage I's folder, its final checkpoint copied to the fold's
final model like DiffOSeg's), DiffOSegTrainer's data pipeline, optimiser, EMA, budget and checkpoints, a loss
hook, and an end-of-training validation that predicts and scores like diffoseg_predict + diffoseg_evaluate."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from diffoseg_auto.errors import InvalidArgumentError
from diffoseg_auto.evaluation.metrics import CaseScoring, evaluate_case, summarize
from diffoseg_auto.inference.baseline_predictor import BaselinePredictor
from diffoseg_auto.inference.export_prediction import export_case, mean_one_hot
from diffoseg_auto.network.baselines.base import BaselineNetwork
from diffoseg_auto.plans.network_arguments import baseline_from_plans
from diffoseg_auto.plans.plans import ConfigurationPlan, Plans
from diffoseg_auto.preprocessing.case_storage import load_case
from diffoseg_auto.results_layout import SUMMARY
from diffoseg_auto.runtime.precision import autocast
from diffoseg_auto.training.diffusion_step import batch_images
from diffoseg_auto.training.trainer import DiffOSegTrainer
from diffoseg_auto.training.training_request import TrainingRequest
from diffoseg_auto.training.validation import ValidationJob, consensus_from_samples
from diffoseg_auto.utilities.file_ops import save_json


class BaselineTrainer(DiffOSegTrainer, ABC):
    is_baseline = True  # run_training trains one stage
    network_class: type[BaselineNetwork]

    def __init__(self, plans: Plans, request: TrainingRequest, stage: int = 1, device: torch.device | None = None):
        if stage != 1:
            raise InvalidArgumentError(f"{type(self).__name__} has a single stage (stage 1), got stage {stage}")
        super().__init__(plans, request, stage, device)

    def build_network(self) -> nn.Module:
        return baseline_from_plans(self.network_class, self.plans, self.configuration)

    def _loss(self, batch: dict, network) -> Tensor:
        data = batch_images(batch, self.device)
        with autocast(self.device, self.amp_dtype):  # the trainer's dtype (bf16 / fp16), as DiffOSeg's
            return self.compute_loss(network, data, np.asarray(batch["seg"]), np.asarray(batch["rater_mask"], bool))

    @abstractmethod
    def compute_loss(self, network, data: Tensor, seg: np.ndarray, rater_mask: np.ndarray) -> Tensor:
        """Loss of one batch: data (B,C,*P), seg (B,R,*P) uint8 labels, rater_mask (B,R) bool."""

    def validate_val_cases(self) -> dict:
        return validate_baseline(self.ema.model, self.plans, self.cfg, self.device, self.validation_job())


def validate_baseline(network: BaselineNetwork, plans: Plans, configuration: ConfigurationPlan, device: torch.device,
                      job: ValidationJob) -> dict:
    """Samples (the configuration's training.num_val_samples), consensus and per-rater predictions of every case
    scored against its raters (preprocessed geometry), as validate_cases does for DiffOSeg; with ``job.file_ending``
    also exported as diffoseg_predict does."""
    network.eval()
    predictor = BaselinePredictor(network, configuration, device, configuration.inference.use_mirroring,
                                  configuration.inference.step_size)
    K, raters, num_samples = plans.num_classes, list(plans.raters), configuration.training.num_val_samples
    target = job.export_target(configuration, K)
    per_case = []
    for i, case in enumerate(tqdm(job.cases, desc="validation")):
        data, seg, rater_mask, properties = load_case(job.data_folder, case, mmap=False)
        samples, rater_preds = network.to_predictions(predictor.predict_case(data, num_samples, seed=i),
                                                      num_samples, len(raters), K)
        res = evaluate_case(samples, seg, rater_mask, K, rater_predictions=rater_preds,
                            consensus=consensus_from_samples(samples, K), scoring=CaseScoring(job.mode, calibration=True))
        if target is not None:
            export_case(case, properties, target,
                        consensus_probabilities=mean_one_hot(samples, K), samples=samples,
                        rater_samples={r: rater_preds[k:k + 1] for k, r in enumerate(raters)})
        per_case.append({"case": case, **res})
    summary = summarize(per_case, raters, job.mode)
    save_json(summary, Path(job.output_folder) / SUMMARY)
    return summary
