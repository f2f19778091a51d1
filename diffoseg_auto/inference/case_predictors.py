"""The methods diffoseg_predict runs, behind one small interface.

A ``CasePredictor`` turns one preprocessed case into ``CaseOutputs`` (samples and per-rater
predictions in preprocessed geometry); ``run_prediction`` (prediction_run.py) does everything else
(inputs, output-folder rules, workers, export, failures) the same way for every method.
``load_case_predictor`` chooses the method from the trained model: the trainer name its checkpoints
carry (model_loading.trained_network) gives DiffOSeg's two-stage diffusion sampling
(``DiffOSegCasePredictor``) or a baseline's sliding-window prediction (``BaselineCasePredictor``).
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import NamedTuple, Protocol, Sequence

import numpy as np
import torch

from diffoseg_auto.inference.baseline_predictor import BaselinePredictor, labels_of
from diffoseg_auto.inference.model_loading import ModelLoadError, has_stage2, load_trained_model
from diffoseg_auto.inference.model_loading import model_raters as model_raters_of
from diffoseg_auto.inference.prediction_cost import PredictionCost, SamplingWork, prediction_cost
from diffoseg_auto.inference.prediction_request import PredictionError, PredictionRequest
from diffoseg_auto.inference.predictor import DiffOSegPredictor, PredictorSettings
from diffoseg_auto.network.baselines import BASELINE_NETWORKS
from diffoseg_auto.network.baselines.base import BaselineNetwork
from diffoseg_auto.plans.plans import Plans
from diffoseg_auto.results_layout import CHECKPOINT_FINAL, checkpoint_path
from diffoseg_auto.runtime.precision import precision_name


class CaseOutputs(NamedTuple):
    """One case's predictions in preprocessed geometry."""
    samples: np.ndarray  # (N, *S) uint8 label maps; the consensus is the argmax of their mean one-hot
    rater_samples: dict[str, np.ndarray] | None  # {rater: (n, *S)}; several samples are merged like the consensus
    # (K, *S) the consensus probabilities where the method has them beyond its samples: a deterministic baseline's
    # softmax (its N samples are one label map repeated); None: the mean one-hot of the samples
    probabilities: np.ndarray | None = None


class CasePredictor(Protocol):
    """What run_prediction needs of a method."""
    raters: list[str]  # the raters whose predictions every case gets (raters/<rater>/)
    settings: dict  # the method's own entries of prediction_settings.json (what its outputs depend on)
    description: str  # the progress bar's label

    def predict_case(self, case: str, data: np.ndarray) -> CaseOutputs:
        """``data`` (C, *S) preprocessed image of ``case`` -> its outputs; reproducible per case (``case`` seeds it)."""

    def prediction_cost(self, spatial_shape: Sequence[int]) -> PredictionCost:
        """The network evaluations of one case of this preprocessed shape (prediction_cost.py)."""


def case_seed(seed: int, key: str) -> int:
    """The seed of one case (and stage), independent of the order and the subset of cases predicted."""
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (2 ** 63)


def select_raters(raters: Sequence[str] | None, model_raters: Sequence[str], per_rater_model: bool,
                  model_folder: Path) -> list[str]:
    """The requested raters among ``model_raters``: None = all when a per-rater model exists (else none),
    'all', 'none' or names."""
    model_raters = list(model_raters)
    if raters is None:
        return model_raters if per_rater_model else []
    raters = list(raters)
    if raters == ["none"]:
        return []
    chosen = model_raters if raters == ["all"] else raters
    unknown = [r for r in chosen if r not in model_raters]
    if unknown:
        raise PredictionError(f"--raters: unknown rater(s) {unknown}. This model's raters: {model_raters} (or 'all' / 'none').")
    if not per_rater_model:
        raise PredictionError(f"--raters {' '.join(raters)}: {model_folder} has no Stage II (per-rater) model for the requested "
                              "folds. Train Stage II, or predict the consensus only with --raters none.")
    return chosen


class DiffOSegCasePredictor:
    """Stage I samples (the consensus and its uncertainty) and, for the chosen raters, Stage II samples with
    their prompts, all chains of a case in one batch per stage."""

    def __init__(self, stage1: DiffOSegPredictor, stage2: DiffOSegPredictor | None, raters: list[str],
                 model_raters: list[str], num_samples: int, sampling_steps: int, rater_num_samples: int, seed: int):
        if raters and stage2 is None:
            raise ValueError("DiffOSegCasePredictor: per-rater predictions need a Stage II predictor")
        self.stage1, self.stage2 = stage1, stage2
        self.raters = raters
        self.rater_ids = [model_raters.index(r) for r in raters]
        self.num_samples, self.sampling_steps, self.rater_num_samples = num_samples, sampling_steps, rater_num_samples
        self.seed = seed
        self.description = "predict"
        self.settings = {"num_samples": num_samples, "sampling_steps": sampling_steps, "rater_num_samples": rater_num_samples,
                         "use_mirroring": stage1.use_mirroring, "precision": precision_name(stage1.amp_dtype)}

    def prediction_cost(self, spatial_shape: Sequence[int]) -> PredictionCost:
        p = self.stage1
        work = SamplingWork(self.sampling_steps, self.num_samples, len(self.raters), self.rater_num_samples)
        return prediction_cost(p.configuration, spatial_shape, p.step_size, p.use_mirroring, len(p.networks), work)

    def predict_case(self, case: str, data: np.ndarray) -> CaseOutputs:
        samples = self.stage1.sample_case(data, self.num_samples, self.sampling_steps, seed=case_seed(self.seed, case))
        if not self.raters:
            return CaseOutputs(samples, None)
        per_rater = self.stage2.sample_raters(data, self.rater_ids, self.rater_num_samples, self.sampling_steps,
                                              seed=case_seed(self.seed, case + "/stage2"))
        return CaseOutputs(samples, dict(zip(self.raters, per_rater)))


class BaselineCasePredictor:
    """A baseline network's M sliding-window outputs per case, turned into N samples and one prediction per rater
    by the network's ``to_predictions`` (see baseline_predictor.py)."""

    def __init__(self, predictor: BaselinePredictor, trainer: str, raters: list[str], model_raters: list[str],
                 num_classes: int, num_samples: int, use_mirroring: bool, seed: int):
        self.predictor = predictor
        self.network: BaselineNetwork = predictor.networks[0]
        self.raters, self.model_raters = raters, model_raters
        self.num_classes, self.num_samples, self.seed = num_classes, num_samples, seed
        self.description = f"predict {trainer}"
        self.settings = {"trainer": trainer, "num_samples": num_samples, "use_mirroring": use_mirroring}

    def prediction_cost(self, spatial_shape: Sequence[int]) -> PredictionCost:
        p = self.predictor
        per_window = self.num_samples if self.network.latent_dim else 1  # a stochastic network: N outputs a window
        return prediction_cost(p.configuration, spatial_shape, p.step_size, p.use_mirroring, len(p.networks),
                               SamplingWork(samples=per_window))

    def predict_case(self, case: str, data: np.ndarray) -> CaseOutputs:
        probs = self.predictor.predict_probabilities(data, self.num_samples, seed=case_seed(self.seed, case))
        samples, rater_preds = self.network.to_predictions(labels_of(probs), self.num_samples, len(self.model_raters),
                                                           self.num_classes)
        soft = probs[0] if self.network.soft_consensus else None
        return CaseOutputs(samples, {r: rater_preds[self.model_raters.index(r)][None] for r in self.raters} or None,
                           soft)


def stage1_checkpoint_name(model_folder: Path, folds: list, checkpoint_name: str) -> str:
    """The Stage I checkpoint that goes with -chk: the same name, except for a name only Stage II has (a Stage II
    learning-curve point, checkpoint_stage2_at_<F>.pth): then the final Stage I, the one Stage II started from."""
    if (not all(checkpoint_path(model_folder, f, 1, checkpoint_name).is_file() for f in folds)
            and has_stage2(model_folder, folds, checkpoint_name)):
        return CHECKPOINT_FINAL
    return checkpoint_name


def load_case_predictor(request: PredictionRequest, dataset_name: str, model_folder: Path,
                        device: torch.device | str) -> tuple[CasePredictor, Plans]:
    """The method of ``model_folder``'s checkpoints, set up as ``request`` asks, and the plans it was trained with."""
    folds = list(request.folds)
    nets, plans, config_name, diffusion = load_trained_model(model_folder, folds, 1,
                                                             stage1_checkpoint_name(model_folder, folds,
                                                                                    request.checkpoint_name),
                                                             device, expected_dataset=dataset_name)
    if config_name != request.configuration:
        raise ModelLoadError(f"{model_folder}: checkpoints were trained with configuration '{config_name}', "
                             f"not '{request.configuration}' (-c).")
    cfg = plans.get_configuration(config_name)
    num_samples = int(cfg.diffusion.num_samples if request.num_samples is None else request.num_samples)
    model_raters = list(plans.raters)
    if isinstance(nets[0], BaselineNetwork):  # every baseline predicts every rater from its one stage
        use_mirroring = True if request.use_mirroring is None else bool(request.use_mirroring)  # nnU-Net's default
        predictor = BaselinePredictor(nets, cfg, device, use_mirroring, request.step_size)
        raters = select_raters(request.raters, model_raters, True, model_folder)
        trainer = next(name for name, cls in BASELINE_NETWORKS.items() if type(nets[0]) is cls)
        return BaselineCasePredictor(predictor, trainer, raters, model_raters, plans.num_classes, num_samples,
                                     use_mirroring, request.seed), plans
    stage2_available = has_stage2(model_folder, folds, request.checkpoint_name)
    if stage2_available:  # the dataset's raters plus any that diffoseg_add_rater added to these folds
        model_raters = model_raters_of(model_folder, folds, plans.raters, request.checkpoint_name)
    raters = select_raters(request.raters, model_raters, stage2_available, model_folder)
    use_mirroring = cfg.inference.use_mirroring if request.use_mirroring is None else bool(request.use_mirroring)
    settings = PredictorSettings(use_mirroring, request.step_size, precision=request.precision,
                                 compile_network=request.compile_network)
    stage1 = DiffOSegPredictor(nets, diffusion, cfg, device, settings)
    stage2 = None
    if raters:
        nets2, _, _, diffusion2 = load_trained_model(model_folder, folds, 2, request.checkpoint_name, device,
                                                     expected_dataset=dataset_name)
        stage2 = DiffOSegPredictor(nets2, diffusion2, cfg, device, settings)
    sampling_steps = int(cfg.diffusion.sampling_steps if request.sampling_steps is None else request.sampling_steps)
    rater_num_samples = int(cfg.stage2.num_samples_per_rater if request.rater_num_samples is None
                            else request.rater_num_samples)
    return DiffOSegCasePredictor(stage1, stage2, raters, model_raters, num_samples, sampling_steps, rater_num_samples,
                                 request.seed), plans
