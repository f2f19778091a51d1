"""One prediction cost (inference/prediction_cost.py) for the predictors, diffoseg_predict's progress bar and the
time-budget planner, with one mirroring rule: every subset of the configuration's mirror axes."""
from __future__ import annotations

import copy

from diffoseg_auto.inference import prediction_run
from diffoseg_auto.inference.prediction_cost import (PredictionCost, SamplingWork, median_case_cost,
                                                     median_preprocessed_shape)
from diffoseg_auto.inference.prediction_request import PredictionRequest
from diffoseg_auto.inference.prediction_run import run_prediction
from planners.budget_candidates import Candidate
from planners.time_budget import BudgetOptions, plan_time_budget
from support.predictor_models import DATASET, make_configuration, tiny_plans, write_model_folder, write_raw_input


def mirrored_plans():
    """20x28 median images (2 x 3 windows of 16x16 at step 0.5), mirroring on along one of the two axes: the planner
    once counted 2^dims = 4 mirrorings where the predictor runs 2."""
    plans = tiny_plans()
    cfg = plans.configurations["2d"]
    cfg.median_image_size_in_voxels = [20, 28]
    cfg.augmentation.mirror_axes = [1]
    cfg.inference.use_mirroring = True
    return plans


def test_the_planners_estimate_is_the_progress_bars_total(env_folders, tmp_path, monkeypatch):
    plans = mirrored_plans()
    write_model_folder(env_folders["results"], plans, stages=(1, 2))
    write_raw_input(tmp_path / "input", n_cases=1, spacing=(1.0, 1.0))
    row = {"train_iteration_s": 0.1, "val_iteration_s": 0.1, "denoiser_row_s": 0.01}
    options = BudgetOptions(throughput={"spacing_x1_widths_div1": (row, row)}, force=Candidate(1, 1), num_cases=5)
    _, budget = plan_time_budget(plans.to_dict(), "2d", 0.1, options=options)
    assert budget["notes"]["time_budget"]["validation"]["changed"] == {}  # the planned settings: predict's defaults
    estimate = budget["notes"]["time_budget"]["prediction"]["network_evaluations_per_case"]

    totals = []

    class RecordingBar(prediction_run.tqdm):
        def __init__(self, *args, **kwargs):
            totals.append(kwargs["total"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(prediction_run, "tqdm", RecordingBar)
    # diffoseg_predict's defaults: the configuration's samples, steps, mirroring and every rater
    run_prediction(PredictionRequest(tmp_path / "input", tmp_path / "out", DATASET, "2d", [0], device="cpu",
                                     num_processes_preprocessing=1, num_processes_export=1))
    cfg = plans.configurations["2d"]
    by_hand = 6 * 2 * cfg.diffusion.sampling_steps * (cfg.diffusion.num_samples + 2 * cfg.stage2.num_samples_per_rater)
    assert totals == [estimate] == [by_hand]


def test_the_cost_counts_every_factor_and_spells_them_out():
    cost = PredictionCost(windows=6, mirrorings=4, folds=2, work=SamplingWork(steps=5, samples=3, prompts=2,
                                                                             samples_per_prompt=4))
    assert cost.network_evaluations == 6 * 4 * 2 * 5 * (3 + 2 * 4)
    assert cost.terms() == "6 window(s) x 4 mirroring(s) x 2 fold(s) x 5 steps x (3 samples + 2 prompt(s) x 4 samples)"
    baseline = PredictionCost(windows=6, mirrorings=1, folds=1, work=SamplingWork(samples=3))  # no chain, no prompts
    assert baseline.network_evaluations == 18 and baseline.terms() == "6 window(s) x 1 mirroring(s) x 1 fold(s) x 3 sample(s)"


def test_a_2d_configuration_of_3d_data_costs_every_slice():
    plans = copy.deepcopy(mirrored_plans())
    plans.original_median_shape = [7, 20, 28]
    plans.configurations["2d"] = cfg = make_configuration(patch=(16, 16), mirror_axes=(0, 1), slice_axis=0)
    cfg.median_image_size_in_voxels = [20, 28]
    assert median_preprocessed_shape(plans, "2d") == [7, 20, 28]
    cost = median_case_cost(plans, "2d")  # the plans' inference default: no mirroring
    assert (cost.windows, cost.mirrorings, cost.folds) == (7 * 6, 1, 1)
    cfg.inference.use_mirroring = True
    assert median_case_cost(plans, "2d").mirrorings == 4
