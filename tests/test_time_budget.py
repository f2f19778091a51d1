"""Time-budget planning (planners/time_budget.py): candidates, the schedule that fits, the rule, the measuring path,
the CLI; learning-curve checkpoints of the trainer."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from diffoseg_auto.plans.plans import load_plans, plans_from_dict
from diffoseg_auto.results_layout import PROGRESS_FRACTIONS, progress_checkpoint_name
from diffoseg_auto.training.run_training import run_training
from diffoseg_auto.training.training_request import ScheduleOverrides, TrainingRequest
from planners.time_budget import (EPOCH_PLOT_SECONDS, MIN_STAGE1_ITERATIONS, STAGE_START_SECONDS, Candidate,
                                  StageCost, candidate_configuration, choose_candidate, plan_time_budget,
                                  stage_schedule, viable_candidates)
from support.toy_training import DATASET, tiny_plans


def big_plans() -> dict:
    """The tiny plans at a 128x128 patch and 4 stages: room for coarser spacings."""
    d = tiny_plans().to_dict()
    c = d["configurations"]["2d"]
    c.update(patch_size=[128, 128], median_image_size_in_voxels=[128, 160])
    c["architecture"].update(n_stages=4, features_per_stage=[16, 32, 64, 64], kernel_sizes=[[3, 3]] * 4,
                             strides=[[1, 1]] + [[2, 2]] * 3, n_conv_per_stage=[2] * 4, n_conv_per_stage_decoder=[2] * 3)
    c["training"].update(num_epochs=100, iterations_per_epoch=250, num_val_iterations_per_epoch=25)
    c["stage2"].update(num_epochs=50, iterations_per_epoch=250)
    return d


def cost(train: float) -> tuple[dict, dict]:
    c = {"train_iteration_s": train, "val_iteration_s": train / 4, "augmentation_s": 0.0, "checkpoint_s": 0.0}
    return c, c


def test_coarser_candidate_replans_patch_topology_and_shift():
    plans = big_plans()
    cfg = candidate_configuration(plans, "2d", Candidate(2, 2))
    assert cfg["inherits_from"] == "2d"
    assert cfg["spacing"] == [2.0, 2.0] and cfg["median_image_size_in_voxels"] == [64, 80]
    assert cfg["patch_size"] == [64, 80]  # the planned patch clipped to the coarser image, then padded to strides
    assert cfg["architecture"]["n_stages"] == len(cfg["architecture"]["strides"]) == 5
    assert cfg["architecture"]["features_per_stage"] == [8, 16, 32, 32, 32]  # widths / 2, at least 8
    assert cfg["data_identifier"] == "DiffOSegPlans_2d_spacing_x2"
    assert cfg["diffusion"]["schedule_shift"] == 1.0  # 64x80 < 128^2 voxels
    plans["configurations"]["x"] = cfg  # the plans loader accepts it (inheritance, validation)
    assert plans_from_dict(plans).get_configuration("x").patch_size == [64, 80]
    same = candidate_configuration(plans, "2d", Candidate(1, 4))
    assert "spacing" not in same and "data_identifier" not in same  # reuses 2d's preprocessed data
    assert same["architecture"]["features_per_stage"] == [8, 8, 16, 16]


def test_viable_candidates_keep_images_and_objects_resolvable():
    plans = big_plans()
    keys = {c.key for c in viable_candidates(plans, "2d")}
    assert "spacing_x8_widths_div1" in keys  # 16 x 20 voxels: still >= 16 per axis
    assert not any(c.spacing_factor > 1 for c in viable_candidates(plans, "2d", median_object_voxels=50))


def test_schedule_fits_the_seconds_and_never_exceeds_the_plan():
    c = StageCost(train_iteration_s=0.5, val_iteration_s=0.1)
    st = stage_schedule(c, 3600, 25000, 250, 0.1, 0)
    # at the planned 250 per epoch: 3590 s / (0.5 + (25 * 0.1 + 0.3) / 250) = 7022 iterations, fewer than 40
    # epochs -> 7022 // 40 = 175 per epoch (18 validation batches), 40 epochs
    assert st["iterations_per_epoch"] == 175 and st["num_epochs"] == 40 and st["num_val_iterations_per_epoch"] == 18
    assert st["estimated_seconds"] <= 3600
    per_it = 0.5 + (18 * 0.1 + EPOCH_PLOT_SECONDS) / 175
    assert st["estimated_seconds"] == pytest.approx(STAGE_START_SECONDS + 40 * 175 * per_it, abs=0.1)
    assert stage_schedule(c, 1e7, 25000, 250, 0.1, 0)["iterations"] == 25000  # capped at the planned schedule
    # augmentation: in-process it adds to the iteration, with workers it only counts where it is the bottleneck
    slow_aug = StageCost(0.5, 0.1, augmentation_s=0.4)
    assert stage_schedule(slow_aug, 3600, 25000, 250, 0.1, 0)["iterations"] < st["iterations"]
    assert stage_schedule(slow_aug, 3600, 25000, 250, 0.1, 2)["iterations"] == st["iterations"]


def test_a_slow_stage_spreads_the_remainder_over_its_few_epochs():
    # 4 s an iteration: 69 iterations fit, 6 epochs of the minimum 10 would leave 9 of them (36 s) unused
    c = StageCost(train_iteration_s=4.0, val_iteration_s=0.1)
    seconds = STAGE_START_SECONDS + 69.5 * (4.0 + (0.1 + EPOCH_PLOT_SECONDS) / 10)
    st = stage_schedule(c, seconds, 25000, 250, 0.1, 0)
    assert (st["num_epochs"], st["iterations_per_epoch"], st["iterations"]) == (6, 11, 66)
    assert st["estimated_seconds"] <= seconds


def test_rule_picks_the_most_expensive_candidate_that_reaches_the_threshold():
    plans = big_plans()
    table = {"spacing_x1_widths_div1": cost(1.0), "spacing_x1_widths_div2": cost(0.4),
             "spacing_x2_widths_div1": cost(0.25), "spacing_x4_widths_div4": cost(0.02)}
    # 1 h, Stage I gets 2400 s: ~2300 / ~5800 / ~9300 / ~25000 (capped) iterations
    name, cfg = plan_time_budget(plans, "2d", 1.0, throughput=table, min_stage1_iterations=2000)
    tb = cfg["notes"]["time_budget"]
    assert name == "2d_budget_1h" and tb["chosen"] == "spacing_x1_widths_div1"
    assert cfg["training"]["num_epochs"] * cfg["training"]["iterations_per_epoch"] >= 2000
    _, cfg = plan_time_budget(plans, "2d", 1.0, throughput=table, min_stage1_iterations=5000)
    assert cfg["notes"]["time_budget"]["chosen"] == "spacing_x1_widths_div2"
    assert cfg["architecture"]["features_per_stage"] == [8, 16, 32, 32]
    _, cfg = plan_time_budget(plans, "2d", 0.01, throughput=table, min_stage1_iterations=5000)
    assert cfg["notes"]["time_budget"]["chosen"] == "spacing_x4_widths_div4"  # none reaches it: the most iterations
    for hours in (0.5, 1.0, 4.0):  # both stages together fit the budget
        _, cfg = plan_time_budget(plans, "2d", hours, throughput=table)
        assert cfg["notes"]["time_budget"]["estimated_training_hours"] <= hours
        rows = cfg["notes"]["time_budget"]["candidates"]
        assert {r["candidate"] for r in rows} == set(table)
    with pytest.raises(ValueError, match="must be > 0"):
        plan_time_budget(plans, "2d", 0, throughput=table)
    with pytest.raises(ValueError, match="not in the plans"):
        plan_time_budget(plans, "3d_fullres", 1, throughput=table)


def test_the_default_rule_picks_what_won_on_the_tuning_folds():
    """The costs per Stage I iteration measured in the 2026-12-02 sweep (results.md, section 1), per candidate, and
    the hours of its runs: the default rule picks the candidate with the lowest held-out GED there."""
    plans = big_plans()
    lidc = {"spacing_x1_widths_div1": cost(0.945), "spacing_x1_widths_div2": cost(0.476)}
    for hours in (0.1, 0.25, 0.5):
        _, cfg = plan_time_budget(plans, "2d", hours, throughput=lidc)
        assert cfg["notes"]["time_budget"]["chosen"] == "spacing_x1_widths_div1"
    bubil = {"spacing_x4_widths_div1": cost(3.148), "spacing_x8_widths_div1": cost(0.617)}
    _, cfg = plan_time_budget(plans, "2d", 0.1, throughput=bubil)
    assert cfg["notes"]["time_budget"]["chosen"] == "spacing_x4_widths_div1"
    assert cfg["training"]["num_epochs"] * cfg["training"]["iterations_per_epoch"] >= MIN_STAGE1_ITERATIONS


def test_choose_candidate_tie_break_and_fallback():
    rows = [{"candidate": "a", "spacing_factor": 1, "feature_divisor": 2, "stage1_seconds_per_iteration": 1.0,
             "stage1": {"iterations": 100}},
            {"candidate": "b", "spacing_factor": 2, "feature_divisor": 1, "stage1_seconds_per_iteration": 1.0,
             "stage1": {"iterations": 100}},
            {"candidate": "c", "spacing_factor": 4, "feature_divisor": 1, "stage1_seconds_per_iteration": 0.1,
             "stage1": {"iterations": 1000}}]
    assert choose_candidate(rows, 50)["candidate"] == "a"   # equal cost: the finer spacing
    assert choose_candidate(rows, 500)["candidate"] == "c"
    assert choose_candidate(rows, 5000)["candidate"] == "c"  # none reaches it: the most iterations


def test_measuring_path_runs_on_cpu_and_the_plan_trains(toy):
    torch.set_num_threads(1)
    plans = tiny_plans().to_dict()
    name, cfg = plan_time_budget(plans, "2d", 0.002, "cpu", num_workers=0, measure_seconds=0.2)
    rows = cfg["notes"]["time_budget"]["candidates"]
    assert rows and all(r["stage1_seconds_per_iteration"] > 0 and r["measured"]["stage2"]["denoiser_row_s"] > 0
                        for r in rows)
    assert "Xeon" in cfg["notes"]["time_budget"]["device_name"] or cfg["notes"]["time_budget"]["device_name"]
    plans["configurations"][name] = cfg
    p = plans_from_dict(plans).get_configuration(name)
    assert p.training.num_epochs >= 1 and p.stage2.num_epochs >= 1


def test_plan_experiment_cli_adds_the_budget_configuration(toy, capsys, monkeypatch):
    from planners import plan_and_preprocess_entrypoints as entry
    from planners import time_budget

    pp = toy["preprocessed"] / DATASET / "DiffOSegPlans.json"
    monkeypatch.setattr(entry, "run_planning", lambda *a, **k: ["DiffOSegPlans"])  # keep the tiny plans
    table = {c.key: cost(0.01) for c in viable_candidates(tiny_plans().to_dict(), "2d")}
    real = time_budget.plan_time_budget
    monkeypatch.setattr(time_budget, "plan_time_budget", lambda *a, **k: real(*a, **{**k, "throughput": table}))
    entry.plan_experiment(["-d", DATASET, "--time_budget", "0.01", "-device", "cpu"])
    plans = load_plans(pp)
    cfg = plans.get_configuration("2d_budget_0.01h")
    assert cfg.notes["time_budget"]["hours"] == 0.01 and cfg.notes["time_budget"]["device"] == "cpu"
    assert json.loads(pp.read_text())["configurations"]["2d_budget_0.01h"]["inherits_from"] == "2d"


@pytest.mark.slow
def test_progress_checkpoints_are_written_resumable_and_predictable(toy, tmp_path, monkeypatch):
    from diffoseg_auto.inference.model_loading import load_trained_model
    from diffoseg_auto.training.trainer import DiffOSegTrainer

    full = tmp_path / "full"
    run_training(TrainingRequest(DATASET, "2d", 0, stage="1", schedule=ScheduleOverrides(num_epochs=8),
                                 final_validation=False, num_workers=0, output_folder=full))
    ck = {f: torch.load(full / "fold_0" / "stage1" / progress_checkpoint_name(1, f), weights_only=False)
          for f in PROGRESS_FRACTIONS}
    assert {f: c["epoch"] for f, c in ck.items()} == {0.125: 1, 0.25: 2, 0.5: 4, 1.0: 8}
    # killed after epoch 3 (latest saved every epoch here), resumed with --c: the later point is written as if
    # the run had not stopped
    monkeypatch.setattr(DiffOSegTrainer, "save_every", 1)
    original = DiffOSegTrainer.on_epoch_end

    def stop_after_epoch_3(self, *args):
        original(self, *args)
        if self.current_epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(DiffOSegTrainer, "on_epoch_end", stop_after_epoch_3)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_training(TrainingRequest(DATASET, "2d", 0, stage="1", schedule=ScheduleOverrides(num_epochs=8),
                                     final_validation=False, num_workers=0, output_folder=cut))
    assert not (cut / "fold_0" / "stage1" / progress_checkpoint_name(1, 0.5)).exists()
    monkeypatch.setattr(DiffOSegTrainer, "on_epoch_end", original)
    run_training(TrainingRequest(DATASET, "2d", 0, stage="1", schedule=ScheduleOverrides(num_epochs=8),
                                 final_validation=False, num_workers=0, output_folder=cut, continue_training=True))
    resumed = torch.load(cut / "fold_0" / "stage1" / progress_checkpoint_name(1, 0.5), weights_only=False)
    assert resumed["epoch"] == 4
    for k, v in ck[0.5]["raw_network_weights"].items():
        torch.testing.assert_close(resumed["raw_network_weights"][k], v, rtol=0, atol=1e-6)
    nets, *_ = load_trained_model(cut, [0], 1, progress_checkpoint_name(1, 0.25))  # prediction reads the points
    assert len(nets) == 1


def test_steady_seconds_skips_the_first_call_and_times_three_more_when_it_is_slow():
    from diffoseg_auto.training.throughput import steady_seconds

    def scripted(durations):  # a clock that advances by the scripted duration of each call
        now, calls = [0.0], iter(durations)
        state = {"in_call": False}

        def clock():
            if state["in_call"]:
                now[0] += next(calls)
            state["in_call"] = not state["in_call"]
            return now[0]
        return clock

    # slow set-up (5 s), then 2 s calls with one outlier: the first call exceeds the 3 s budget -> exactly three
    # more calls, whose median ignores the outlier (a fourth scripted call would raise StopIteration)
    assert steady_seconds(lambda: None, 3.0, clock=scripted([5.0, 2.0, 2.5, 2.25])) == 2.25
    # fast calls: the first (0.5 s, set-up) is dropped, the median of the 6 that fit 3 s is taken
    assert steady_seconds(lambda: None, 3.0, clock=scripted([0.5, 0.2, 0.3, 0.2, 0.4, 0.2, 0.3])) == 0.25
