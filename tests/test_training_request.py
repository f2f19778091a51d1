"""The training request (issue 34): one validated value built from the command line or Python, run by
run_training(request) for every trainer type; the per-stage schedule accessor; --max_minutes read every
iteration with the learning rate on the budget's spent share (issue 36), tested with an injected clock."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from diffoseg_auto.plans.plans import StageSchedule
from diffoseg_auto.training import stage_budget
from diffoseg_auto.training.optim import lr_at_progress
from diffoseg_auto.training.run_training import build_parser, request_from_args, run_training
from diffoseg_auto.training.stage_budget import StageBudget, epochs_that_fit
from diffoseg_auto.training.trainer import DiffOSegTrainer
from diffoseg_auto.training.training_request import ScheduleOverrides, TimeBudget, TrainingRequest
from diffoseg_auto.utilities.argument_checks import ArgumentError
from support.toy_training import DATASET, tiny_plans

TRAINERS = ["DiffOSegTrainer", "ConsensusUNetTrainer", "MultiHeadUNetTrainer", "ProbUNetTrainer"]


def test_every_problem_is_reported_at_once_before_anything_is_touched(tmp_path):
    bad = TrainingRequest(DATASET, "2d", "x", stage="3", trainer="NoSuchTrainer",
                          schedule=ScheduleOverrides(num_epochs=0, iterations_per_epoch=-1, val_iterations=-2),
                          budget=TimeBudget(max_minutes=0, clock="moon"), device="tpu", precision="fp8",
                          num_workers=-1, continue_training=True, overwrite=True, output_folder=tmp_path / "out")
    with pytest.raises(ArgumentError) as err:
        bad.validate()
    lines = str(err.value).splitlines()
    for option in ("fold", "--stage", "--num_epochs", "--iterations_per_epoch", "--val_iterations", "--max_minutes",
                   "--budget_clock", "--num_workers", "-device tpu", "--precision", "Unknown trainer 'NoSuchTrainer'",
                   "--overwrite and --c"):
        assert sum(option in line for line in lines) == 1, (option, lines)
    assert len(lines) == 12 and not (tmp_path / "out").exists()
    with pytest.raises(ArgumentError, match="single stage"):
        TrainingRequest(DATASET, "2d", 0, stage=2, trainer="ConsensusUNetTrainer").validate()


def test_request_normalises_what_callers_pass_and_picks_the_stages():
    r = TrainingRequest(DATASET, "2d", "3", stage=2, output_folder="some/where")
    assert (r.fold, r.stage, str(r.output_folder)) == (3, "2", "some/where")
    r.validate()
    assert r.stages() == (2,) and TrainingRequest(DATASET, "2d", "all").stages() == (1, 2)
    assert TrainingRequest(DATASET, "2d", 0, trainer="ProbUNetTrainer").stages() == (1,)  # a baseline: one stage


def test_the_command_line_builds_the_same_request():
    argv = [DATASET, "2d", "1", "--stage", "2", "-tr", "MultiHeadUNetTrainer", "-p", "OtherPlans", "--c",
            "--num_epochs", "3", "--iterations_per_epoch", "4", "--val_iterations", "0", "--max_minutes", "2.5",
            "--budget_clock", "cpu", "-device", "cpu", "--precision", "fp32", "--seed", "7", "--no_final_validation",
            "--freeze_backbone", "--num_workers", "0"]
    expected = TrainingRequest(DATASET, "2d", 1, stage="2", trainer="MultiHeadUNetTrainer", plans="OtherPlans",
                               schedule=ScheduleOverrides(3, 4, 0, True), budget=TimeBudget(2.5, "cpu"), device="cpu",
                               precision="fp32", num_workers=0, seed=7, continue_training=True, final_validation=False)
    assert request_from_args(build_parser().parse_args(argv)) == expected
    assert request_from_args(build_parser().parse_args([DATASET, "2d", "0"])) == TrainingRequest(DATASET, "2d", 0)


def test_each_stage_reads_its_schedule_from_one_accessor():
    cfg = tiny_plans().configurations["2d"]
    cfg.stage2.freeze_backbone = True
    assert cfg.schedule(1) == StageSchedule(num_epochs=1, iterations_per_epoch=2, initial_lr=1e-2, val_iterations=1,
                                            freeze_backbone=False)
    assert cfg.schedule(2) == StageSchedule(num_epochs=1, iterations_per_epoch=2, initial_lr=5e-3, val_iterations=1,
                                            freeze_backbone=True)
    overrides = ScheduleOverrides(num_epochs=9, freeze_backbone=True)
    assert overrides.apply(cfg.schedule(1), 1) == StageSchedule(9, 2, 1e-2, 1, False)  # Stage I never freezes
    assert overrides.apply(cfg.schedule(2), 2).num_epochs == 9
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        cfg.schedule(3)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", TRAINERS)
def test_one_training_request_per_trainer_type(toy, tmp_path, trainer):
    request = TrainingRequest(DATASET, "2d", 0, trainer=trainer, device="cpu", num_workers=0, final_validation=False,
                              schedule=ScheduleOverrides(num_epochs=1, iterations_per_epoch=2, val_iterations=1),
                              output_folder=tmp_path)
    trainers = run_training(request)
    assert [type(t).__name__ for t in trainers] == [trainer] * len(trainers)
    assert [t.stage for t in trainers] == ([1, 2] if trainer == "DiffOSegTrainer" else [1])
    for tr in trainers:
        assert tr.request is request and (tr.current_epoch, tr.iterations_done) == (1, 2)
        ck = torch.load(tr.output_folder / "checkpoint_final.pth", weights_only=False)
        assert ck["trainer_name"] == trainer and ck["iterations"] == 2 and ck["epoch"] == 1
    assert (tmp_path / "fold_0" / "checkpoint_final.pth").is_file()


def test_budget_fractions_and_the_epochs_that_fit():
    now = [0.0]
    budget = StageBudget(1.0, lambda: now[0], spent_s=15.0)  # 60 s, 15 of them spent by an earlier run (--c)
    now[0] = 15.0
    assert budget.spent_s() == 30.0 and budget.fraction(30.0) == 0.5 and budget.fraction(90.0) == 1.0
    # 1 epoch in 15 s, 30 s left: 2 more epochs; a started epoch counts (the clock cuts it), never beyond the request
    assert epochs_that_fit(budget, 30.0, 3, 1, 10) == 5 and epochs_that_fit(budget, 35.0, 3, 1, 10) == 5
    assert epochs_that_fit(budget, 30.0, 3, 1, 4) == 4 and epochs_that_fit(budget, 60.0, 3, 1, 10) == 3
    assert StageBudget(None, lambda: 0.0).fraction(1e9) == 0.0 and not StageBudget(None, lambda: 0.0).limited
    assert lr_at_progress(1.0, 0.5, "poly", 1.0) == 0.5 and lr_at_progress(1.0, 2.0) == 0.0
    assert lr_at_progress(0.3, 0.9, "constant") == 0.3


@pytest.mark.slow
def test_max_minutes_stops_within_an_iteration_and_the_lr_ends_with_the_budget(toy, tmp_path, monkeypatch):
    # an injected clock: every training iteration costs 10 s, nothing else takes time. A 1-minute budget with 4
    # iterations per epoch: the budget is spent after 6 iterations, inside epoch 2 (not at the end of an epoch)
    steps, lrs, val_batches = [0], [], []
    monkeypatch.setitem(stage_budget.BUDGET_CLOCKS, "wall", lambda: 10.0 * steps[0])
    original = DiffOSegTrainer.train_step

    def timed_step(self, batch):
        lrs.append(self.optimizer.param_groups[0]["lr"])
        steps[0] += 1
        return original(self, batch)

    monkeypatch.setattr(DiffOSegTrainer, "train_step", timed_step)
    validation_step = DiffOSegTrainer.validation_step
    monkeypatch.setattr(DiffOSegTrainer, "validation_step",
                        lambda self, batch: val_batches.append(self.current_epoch) or validation_step(self, batch))
    request = TrainingRequest(DATASET, "2d", 0, stage=1, device="cpu", num_workers=0, final_validation=False,
                              schedule=ScheduleOverrides(num_epochs=5, iterations_per_epoch=4, val_iterations=2),
                              budget=TimeBudget(max_minutes=1.0), output_folder=tmp_path)
    tr = run_training(request)[0]
    assert (tr.iterations_done, tr.current_epoch, tr.num_epochs) == (6, 2, 2)
    # the poly schedule runs on the spent share of the budget (10 s of 60 per iteration), not on the 20 planned
    # iterations: the last step's learning rate is the one 50 of 60 s into the budget
    lr0, exponent = tr.initial_lr, tr.cfg.training.poly_exponent
    assert lrs == pytest.approx([lr0 * (1 - k / 6) ** exponent for k in range(6)])
    ck = torch.load(tmp_path / "fold_0" / "stage1" / "checkpoint_final.pth", weights_only=False)
    assert (ck["epoch"], ck["iterations"], ck["budget_spent_s"]) == (2, 6, 60.0)
    assert val_batches == [0, 0, 1]  # the cut epoch (2 of 4 iterations) validates on its share of the 2 batches
    # --c with the same budget: it is spent, so the stage ends without another iteration
    resumed = run_training(replace(request, continue_training=True))[0]
    assert (resumed.iterations_done, resumed.current_epoch, steps[0]) == (6, 2, 6)
