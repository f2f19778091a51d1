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
from planners.budget_candidates import Candidate, candidate_configuration, candidate_work, viable_candidates
from planners.budget_schedule import (EPOCH_PLOT_SECONDS, MIN_STAGE1_ITERATIONS, STAGE_START_SECONDS, StageCost,
                                      choose_candidate, stage_schedule)
from planners.time_budget import BudgetOptions, budget_summary, plan_time_budget
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


def model_table(plans: dict, full_s: float, row_share: float | None = None) -> dict:
    """Costs that follow the cost model (candidate_work): ``full_s`` seconds per iteration of the full-width,
    full-resolution candidate, the others in proportion to their convolutions; ``row_share``: a denoiser row costs
    this share of a training iteration per sample (None: no prediction cost)."""
    works = {c.key: candidate_work(resolved(plans, cfg)) for c, cfg in viable_candidates(plans, "2d").items()}
    full = works["spacing_x1_widths_div1"].macs
    table = {}
    for key, w in works.items():
        t = full_s * w.macs / full
        c = {"train_iteration_s": t, "val_iteration_s": t / 4, "augmentation_s": 0.0, "checkpoint_s": 0.0,
             "denoiser_row_s": None if row_share is None else t * row_share / w.batch}
        table[key] = (c, c)
    return table


def resolved(plans: dict, cfg: dict) -> dict:
    from planners.budget_candidates import resolved_configuration

    return resolved_configuration({**plans, "configurations": {**plans["configurations"], "x": cfg}}, "x")


def plan(plans: dict, hours: float, **options):
    return plan_time_budget(plans, "2d", hours, options=BudgetOptions(**options))


def test_rule_picks_the_most_expensive_candidate_that_reaches_the_threshold():
    plans = big_plans()
    table = model_table(plans, 1.0)
    # 1 h, Stage I gets 2400 s: the full network ~2300 iterations at 1 s
    name, cfg = plan(plans, 1.0, throughput=table, min_stage1_iterations=2000)
    tb = cfg["notes"]["time_budget"]
    assert name == "2d_budget_1h" and tb["chosen"] == "spacing_x1_widths_div1"
    assert cfg["training"]["num_epochs"] * cfg["training"]["iterations_per_epoch"] >= 2000
    # 5000: out of the full network's reach (measured, ~2300); the next most expensive (spacing x2, 1/3 of the
    # convolutions) reaches it
    _, cfg = plan(plans, 1.0, throughput=table, min_stage1_iterations=5000)
    tb = cfg["notes"]["time_budget"]
    assert tb["chosen"] == "spacing_x2_widths_div1"
    assert cfg["architecture"]["features_per_stage"] == [16, 32, 64, 64, 64]
    rows = {r["candidate"]: r for r in tb["candidates"]}
    assert rows["spacing_x1_widths_div1"]["stage1"]["iterations"] < 5000
    _, cfg = plan(plans, 0.01, throughput=table, min_stage1_iterations=5000)
    assert cfg["notes"]["time_budget"]["chosen"] == "spacing_x8_widths_div4"  # none reaches it: the most iterations
    for hours in (0.5, 1.0, 4.0):  # the whole job fits the budget; every candidate is measured or dropped
        _, cfg = plan(plans, hours, throughput=table)
        tb = cfg["notes"]["time_budget"]
        assert tb["estimated_training_hours"] <= tb["estimated_job_hours"] <= hours
        assert {r["candidate"] for r in tb["candidates"]} | {d["candidate"] for d in tb["dropped"]} == set(table)
    with pytest.raises(ValueError, match="must be > 0"):
        plan(plans, 0, throughput=table)
    with pytest.raises(ValueError, match="not in the plans"):
        plan_time_budget(plans, "3d_fullres", 1, options=BudgetOptions(throughput=table))


def test_the_default_rule_picks_what_won_on_the_tuning_folds():
    """The costs per Stage I iteration measured in the 2026-12-02 sweep (results.md, section 1), per candidate, and
    the hours of its runs: the default rule picks the candidate with the lowest held-out GED there."""
    plans = big_plans()
    lidc = {"spacing_x1_widths_div1": cost(0.945), "spacing_x1_widths_div2": cost(0.476)}
    for hours in (0.1, 0.25, 0.5):
        _, cfg = plan(plans, hours, throughput=lidc)
        assert cfg["notes"]["time_budget"]["chosen"] == "spacing_x1_widths_div1"
    bubil = {"spacing_x4_widths_div1": cost(3.148), "spacing_x8_widths_div1": cost(0.617)}
    _, cfg = plan(plans, 0.25, throughput=bubil)
    assert cfg["notes"]["time_budget"]["chosen"] == "spacing_x4_widths_div1"
    assert cfg["training"]["num_epochs"] * cfg["training"]["iterations_per_epoch"] >= MIN_STAGE1_ITERATIONS
    # at 0.1 h measuring spacing x4 (3 s an iteration) after x8 would take more than the tenth of the hours
    _, cfg = plan(plans, 0.1, throughput=bubil)
    tb = cfg["notes"]["time_budget"]
    assert tb["chosen"] == "spacing_x8_widths_div1"
    assert [d["candidate"] for d in tb["dropped"]] == ["spacing_x4_widths_div1"]
    assert "measuring budget" in tb["dropped"][0]["reason"]


def validation_plans() -> dict:
    """big_plans with the planned validation settings of a real plan (4 samples, 4 per rater prompt, S 25)."""
    plans = big_plans()
    c = plans["configurations"]["2d"]
    c["training"]["num_val_samples"] = 4
    c["stage2"]["num_samples_per_rater"] = 4
    c["diffusion"].update(num_timesteps=250, sampling_steps=25, num_samples=16)
    return plans


def test_the_whole_job_fits_and_unfit_candidates_are_never_measured():
    """The proof of issue 36: an injected table, no timing. 100 cases (20 validated at the end of each stage, 2
    windows each); a denoiser row costs half a training sample."""
    plans = validation_plans()
    table = model_table(plans, 1.0, row_share=0.5)
    calls = []

    def measure(cand, cfg):
        calls.append(cand.key)
        return table[cand.key]

    for hours in (0.05, 0.25, 1.0):
        calls.clear()
        _, cfg = plan(plans, hours, measure=measure, num_cases=100)
        tb = cfg["notes"]["time_budget"]
        val = tb["validation"]
        assert tb["fits"] and tb["estimated_job_hours"] <= hours
        assert val["cases"] == 20 and val["seconds"] > 0
        # the job is both stages' loops and the end-of-stage validation
        assert tb["estimated_job_hours"] == pytest.approx(tb["estimated_training_hours"] + val["seconds"] / 3600,
                                                          abs=1e-3)
        assert val["seconds"] <= 0.2 * hours * 3600 or set(val["changed"]) == {"num_val_samples",
                                                                              "num_samples_per_rater", "sampling_steps"}
        # the sized settings are the configuration's: training validates with them
        s = val["settings"]
        assert cfg["training"]["num_val_samples"] == s["num_val_samples"]
        assert cfg["stage2"]["num_samples_per_rater"] == s["num_samples_per_rater"]
        assert cfg["diffusion"]["sampling_steps"] == s["sampling_steps"]
        # measured: the cheapest first, then the rest from the most expensive down; the dropped never
        assert calls[0] == "spacing_x8_widths_div4"
        assert calls == [r["candidate"] for r in tb["candidates"]]
        assert not set(calls) & {d["candidate"] for d in tb["dropped"]}
        assert tb["measuring"]["modelled_seconds"] <= 0.1 * hours * 3600
    # at 0.05 h (180 s) the full network's validation alone (at a quarter of its estimate, fewest settings) exceeds
    # its 20% of the hours: dropped on the estimate, never measured
    calls.clear()
    _, cfg = plan(plans, 0.05, measure=measure, num_cases=100)
    dropped = {d["candidate"]: d["reason"] for d in cfg["notes"]["time_budget"]["dropped"]}
    assert dropped["spacing_x1_widths_div1"].startswith("estimated before measuring: its validation exceeds 20%")
    assert "spacing_x1_widths_div1" not in calls
    calls.clear()  # at 0.01 h (36 s) its job alone exceeds the hours
    _, cfg = plan(plans, 0.01, measure=measure, num_cases=100)
    dropped = {d["candidate"]: d["reason"] for d in cfg["notes"]["time_budget"]["dropped"]}
    assert dropped["spacing_x1_widths_div1"].startswith("estimated before measuring: cannot fit the hours")
    assert calls == ["spacing_x8_widths_div4"] and cfg["notes"]["time_budget"]["estimated_job_hours"] <= 0.01
    # at 1 h the validation of the full network is shrunk to 20% of the hour: 2 samples, 1 per rater, fewer steps
    _, cfg = plan(plans, 1.0, measure=measure, num_cases=100)
    tb = cfg["notes"]["time_budget"]
    assert tb["chosen"] == "spacing_x1_widths_div1"
    assert tb["validation"]["changed"]["num_val_samples"] == [4, 2]
    assert tb["validation"]["changed"]["num_samples_per_rater"] == [4, 1]
    assert 10 <= tb["validation"]["settings"]["sampling_steps"] < 25
    assert tb["validation"]["seconds"] <= 0.2 * 3600


def test_prediction_cost_is_printed_with_the_cheaper_setting_over_its_share():
    plans = validation_plans()
    table = model_table(plans, 1.0, row_share=1.0)
    name, cfg = plan(plans, 1.0, throughput=table, num_cases=100, force=Candidate(1, 1))
    pred = cfg["notes"]["time_budget"]["prediction"]
    # 2 windows x S x (16 samples + 3 raters x n) rows at 0.5 s: above 5% of the hour (180 s)
    assert pred["prediction_seconds_per_case"] > 180 and pred["cheaper"]["prediction_seconds_per_case"] <= 180
    summary = budget_summary(name, cfg)
    assert "s per median case" in summary and "use diffoseg_predict --sampling_steps" in summary
    _, cfg = plan(plans, 1.0, throughput=model_table(plans, 1.0, row_share=0.001), num_cases=100)
    assert "cheaper" not in cfg["notes"]["time_budget"]["prediction"]


def test_a_large_dataset_trains_a_cpu_sized_batch():
    """3,000 crops: the planned batch fills a GPU's 8 GB (175); on a CPU the budget trains CPU_MAX_BATCH."""
    from planners.budget_candidates import CPU_MAX_BATCH

    plans = big_plans()
    plans["configurations"]["2d"]["batch_size"] = 175
    table = model_table(plans, 1.0)
    _, cfg = plan(plans, 0.5, throughput=table, num_cases=3000)
    assert cfg["batch_size"] == CPU_MAX_BATCH and cfg["notes"]["time_budget"]["batch_size"]["planned"] == 175
    _, cfg = plan_time_budget(plans, "2d", 0.5, "cuda", options=BudgetOptions(throughput=table, num_cases=3000))
    assert "batch_size" not in cfg  # a GPU trains the planned batch


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
    name, cfg = plan_time_budget(plans, "2d", 0.002, "cpu", options=BudgetOptions(num_workers=0, measure_seconds=0.2))
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
    monkeypatch.setattr(time_budget, "plan_time_budget",
                        lambda *a: real(*a[:5], dataclasses.replace(a[5], throughput=table)))
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
