"""What predicting one case costs, in network evaluations: the one formula of the predictors (case_predictors.py),
the progress bar and planned-cost line of diffoseg_predict (prediction_run.py) and the time-budget planner
(planners/time_budget.py).

network evaluations = windows x mirrorings x folds x steps x (samples + prompts x samples per prompt)

Windows and mirrorings come from window_geometry.py, the rules the predictors run: the windows of the image padded
to at least one patch, and every subset of the configuration's mirror axes when mirroring is on (nnU-Net's TTA).
A baseline network has no reverse chain (1 step) and no prompts; its samples are its outputs per window (a
Probabilistic U-Net's N latent draws, 1 for a deterministic network).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from diffoseg_auto.inference.window_geometry import mirror_combinations, num_windows
from diffoseg_auto.plans.plans import ConfigurationPlan, Plans


@dataclass(frozen=True)
class SamplingWork:
    """What every window of every mirroring and fold is evaluated for."""
    steps: int = 1               # reverse-chain steps (1: one forward pass)
    samples: int = 1             # chains (Stage I samples) or outputs per window (a baseline)
    prompts: int = 0             # rater prompts (Stage II)
    samples_per_prompt: int = 0  # chains per rater prompt

    @property
    def rows_per_step(self) -> int:
        return self.samples + self.prompts * self.samples_per_prompt


@dataclass(frozen=True)
class PredictionCost:
    windows: int
    mirrorings: int
    folds: int
    work: SamplingWork

    @property
    def network_evaluations(self) -> int:
        return self.windows * self.mirrorings * self.folds * self.work.steps * self.work.rows_per_step

    def terms(self) -> str:
        """The factors, spelled out for the planned-cost line."""
        w = self.work
        steps = f" x {w.steps} steps" if w.steps != 1 else ""
        rows = (f"({w.samples} samples + {w.prompts} prompt(s) x {w.samples_per_prompt} samples)" if w.prompts
                else f"{w.samples} sample(s)")
        return f"{self.windows} window(s) x {self.mirrorings} mirroring(s) x {self.folds} fold(s){steps} x {rows}"


def prediction_cost(configuration: ConfigurationPlan, spatial_shape: Sequence[int], step_size: float,
                    use_mirroring: bool, folds: int, work: SamplingWork) -> PredictionCost:
    """The cost of one preprocessed case of ``spatial_shape`` (all axes of the sampled array)."""
    return PredictionCost(num_windows(configuration, spatial_shape, step_size),
                          len(mirror_combinations(configuration, use_mirroring)), int(folds), work)


def median_preprocessed_shape(plans: Plans, configuration: str) -> list[int]:
    """The median image in the preprocessed geometry the predictor sees (all axes: a 2d configuration of 3D data
    keeps the volume's median slice count along its slice axis)."""
    cfg = plans.get_configuration(configuration)
    shape = [int(v) for v in cfg.median_image_size_in_voxels]
    if cfg.slice_axis is not None and len(plans.original_median_shape) == 3:
        shape.insert(cfg.slice_axis, int(plans.original_median_shape[cfg.slice_axis]))
    return shape


def median_case_cost(plans: Plans, configuration: str) -> PredictionCost:
    """The median case predicted with the configuration's own settings (diffoseg_predict's defaults with one fold:
    its step size, mirroring, samples and steps, and every rater's prompts): what the planner estimates."""
    cfg = plans.get_configuration(configuration)
    work = SamplingWork(cfg.diffusion.sampling_steps, cfg.diffusion.num_samples, plans.num_raters,
                        cfg.stage2.num_samples_per_rater)
    return prediction_cost(cfg, median_preprocessed_shape(plans, configuration), cfg.inference.step_size,
                           cfg.inference.use_mirroring, 1, work)
