"""End-to-end toy training (both stages), resume equality, --val, and bad-input errors."""
from __future__ import annotations

import json
import time

import numpy as np

import pytest
import torch

from diffoseg_auto.cli.console import run_command
from diffoseg_auto.io.checkpoint_io import CheckpointError
from diffoseg_auto.training.run_training import main, run_training
from diffoseg_auto.training.training_request import ScheduleOverrides, TimeBudget, TrainingRequest
from diffoseg_auto.training.splits import SplitsError
from diffoseg_auto.training.trainer import Stage1CheckpointMissingError
from diffoseg_auto.utilities.argument_checks import ArgumentError
from support.toy_training import DATASET, tiny_plans


@pytest.mark.slow
def test_both_stages_write_every_file(toy, capsys):
    trainers = run_training(TrainingRequest(DATASET, "2d", 0, stage="both", num_workers=0))
    assert [t.stage for t in trainers] == [1, 2]
    root = toy["results"] / DATASET / "DiffOSegTrainer__DiffOSegPlans__2d"
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        assert (root / name).is_file()
    splits = json.loads((toy["preprocessed"] / DATASET / "splits_final.json").read_text())
    assert len(splits) == 2 and splits[0]["val"] in (["case_000", "case_001"], ["case_002", "case_003"])  # grouped
    for stage in (1, 2):
        sf = root / "fold_0" / f"stage{stage}"
        for name in ("checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_final.pth", "progress.png",
                     "debug.json", "validation/summary.json"):
            assert (sf / name).is_file(), f"stage{stage}/{name} missing"
        assert len(list(sf.glob("training_log_*.txt"))) == 1
        ck = torch.load(sf / "checkpoint_final.pth", weights_only=False)
        assert ck["epoch"] == 1
        assert ck["init_args"] == {"trainer_name": "DiffOSegTrainer", "plans_name": "DiffOSegPlans", "configuration": "2d",
                                   "dataset_name": DATASET, "stage": stage, "fold": 0, "num_raters": 3, "num_classes": 2}
        assert {"network_weights", "raw_network_weights", "optimizer_state", "grad_scaler_state", "logging",
                "rng_state", "trainer_name", "plans"} <= set(ck)
        assert len(ck["logging"]["train_losses"]) == 1 and np.isfinite(ck["logging"]["train_losses"][0])
        assert json.loads((sf / "debug.json").read_text())["stage"] == stage
        summary = json.loads((sf / "validation" / "summary.json").read_text())
        assert summary["num_cases"] == 2
        key = "GED" if stage == 1 else "Dice_rater_strict"
        assert any(k.startswith(key) for k in summary["metrics"]), summary["metrics"].keys()
        assert ("ECE" in summary["metrics"]) == (stage == 1)  # calibration of the samples; Stage II has none
    s1 = torch.load(root / "fold_0" / "stage1" / "checkpoint_final.pth", weights_only=False)
    s2 = torch.load(root / "fold_0" / "stage2" / "checkpoint_final.pth", weights_only=False)
    fold_final = torch.load(root / "fold_0" / "checkpoint_final.pth", weights_only=False)
    assert fold_final["init_args"]["stage"] == 2
    # 2 iterations: the EMA horizon rule (at most 10% of the run) gives decay 0, so EMA == raw weights
    k = next(n for n, v in s1["network_weights"].items() if v.dtype.is_floating_point and v.ndim > 1)
    assert torch.equal(s1["network_weights"][k], s1["raw_network_weights"][k])
    assert s2["network_weights"].keys() != s1["network_weights"].keys()  # stage 2 has the prompt block
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "ETA" in out and "lr 1.00e-02" in out


@pytest.mark.slow
def test_resume_gives_same_weights_as_uninterrupted(toy, tmp_path, monkeypatch):
    import diffoseg_auto.training.trainer as trainer_module

    restored = []
    original_restore = trainer_module.restore_rng_state
    monkeypatch.setattr(trainer_module, "restore_rng_state", lambda state: (restored.append(state), original_restore(state)))
    full = run_training(TrainingRequest(DATASET, "2d", 0, stage="1", schedule=ScheduleOverrides(num_epochs=2),
                                        final_validation=False, num_workers=0, output_folder=tmp_path / "a"))[0]
    run_training(TrainingRequest(DATASET, "2d", 0, stage="1", schedule=ScheduleOverrides(num_epochs=1),
                                 final_validation=False, num_workers=0, output_folder=tmp_path / "b"))
    resumed = run_training(TrainingRequest(DATASET, "2d", 0, stage="1", schedule=ScheduleOverrides(num_epochs=2),
                                           final_validation=False, num_workers=0, output_folder=tmp_path / "b",
                                           continue_training=True))[0]
    assert resumed.current_epoch == 2
    # the checkpoint's global random streams were restored once, on resume (epoch 1 of run b)
    assert len(restored) == 1 and restored[0]["data_loader"]["epoch"] == 0 and {"torch", "numpy", "python"} <= set(restored[0])
    a, b = full.network.state_dict(), resumed.network.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    for name, v in full.ema.state_dict().items():
        torch.testing.assert_close(v, resumed.ema.state_dict()[name], rtol=0, atol=1e-6)
    assert resumed.logger.values["train_losses"] == pytest.approx(full.logger.values["train_losses"], abs=1e-6)


@pytest.mark.slow
def test_val_only_and_stage2_needs_stage1(toy, tmp_path):
    with pytest.raises(Stage1CheckpointMissingError, match="Run stage 1 first"):
        run_training(TrainingRequest(DATASET, "2d", 1, stage="2", num_workers=0))
    run_training(TrainingRequest(DATASET, "2d", 1, stage="1", final_validation=False, num_workers=0))
    sf = toy["results"] / DATASET / "DiffOSegTrainer__DiffOSegPlans__2d" / "fold_1" / "stage1"
    assert not (sf / "validation").exists()
    run_training(TrainingRequest(DATASET, "2d", 1, stage="1", only_validation=True))
    assert json.loads((sf / "validation" / "summary.json").read_text())["num_cases"] == 2
    # Stage II with a frozen backbone: every transferred Stage I tensor is unchanged after training
    tr2 = run_training(TrainingRequest(DATASET, "2d", 1, stage="2", schedule=ScheduleOverrides(freeze_backbone=True),
                                       final_validation=False, num_workers=0))[0]
    s1 = torch.load(sf / "checkpoint_final.pth", weights_only=False)["network_weights"]
    s2 = tr2.network.state_dict()
    same = [n for n in s1 if s1[n].shape == s2[n].shape]
    assert same and all(torch.equal(s1[n], s2[n]) for n in same)
    trainable = {n for n, p in tr2.network.named_parameters() if p.requires_grad}
    assert trainable and trainable.isdisjoint(same)
    assert json.loads((sf.parent / "stage2" / "debug.json").read_text())["freeze_backbone"] is True


def test_foreign_checkpoint_is_rejected_and_kept(toy, tmp_path):
    run_training(TrainingRequest(DATASET, "2d", 0, stage="1", final_validation=False, num_workers=0,
                                 output_folder=tmp_path))
    latest = tmp_path / "fold_0" / "stage1" / "checkpoint_latest.pth"
    ck = torch.load(latest, weights_only=False)
    ck["init_args"]["dataset_name"] = "Dataset999_Other"
    torch.save(ck, latest)
    before = latest.read_bytes()
    with pytest.raises(CheckpointError, match="different training run"):
        run_training(TrainingRequest(DATASET, "2d", 0, stage="1", num_workers=0, output_folder=tmp_path,
                                     continue_training=True))
    assert latest.read_bytes() == before


def test_bad_inputs_give_clear_errors(toy, capsys):
    with pytest.raises(SplitsError, match="Fold 7 is outside"):
        run_training(TrainingRequest(DATASET, "2d", 7, stage="1", num_workers=0))
    with pytest.raises(ValueError, match="Configuration '3d_fullres' is not in plans"):
        run_training(TrainingRequest(DATASET, "3d_fullres", 0, stage="1"))
    with pytest.raises(FileNotFoundError, match="plans file not found"):
        run_training(TrainingRequest(DATASET, "2d", 0, stage="1", plans="OtherPlans"))
    with pytest.raises(ArgumentError, match="Unknown trainer"):
        run_training(TrainingRequest(DATASET, "2d", 0, stage="1", trainer="NoSuchTrainer"))
    assert run_command("diffoseg_train", main, [DATASET, "2d", "0", "--stage", "2", "-device", "cpu"]) == 1
    assert "Run stage 1 first" in capsys.readouterr().err


@pytest.mark.slow
def test_time_budget_cuts_epochs(toy, tmp_path):
    # a budget far below one epoch's time: the stage stops after the first epoch and says so
    tr = run_training(TrainingRequest(DATASET, "2d", 0, stage="1", schedule=ScheduleOverrides(num_epochs=50),
                                      budget=TimeBudget(max_minutes=1e-4), final_validation=False, num_workers=0,
                                      output_folder=tmp_path / "budget"))[0]
    assert tr.current_epoch == 1 and tr.num_epochs == 1
    ckpt = torch.load(tmp_path / "budget" / "fold_0" / "stage1" / "checkpoint_final.pth", weights_only=False)
    assert ckpt["epoch"] == 1
    # a generous budget leaves the planned epochs alone
    tr = run_training(TrainingRequest(DATASET, "2d", 0, stage="1", schedule=ScheduleOverrides(num_epochs=2),
                                      budget=TimeBudget(max_minutes=60), final_validation=False, num_workers=0,
                                      output_folder=tmp_path / "free"))[0]
    assert tr.current_epoch == 2


@pytest.mark.slow
def test_cpu_budget_clock_counts_process_time(toy, tmp_path, monkeypatch):
    # --budget_clock cpu reads the process CPU clock: a fake one that advances an hour per reading cuts a
    # 10-minute budget after the first epoch, although hardly any wall-clock time passes
    import itertools

    from diffoseg_auto.training import stage_budget

    assert stage_budget.BUDGET_CLOCKS["cpu"] is time.process_time
    hours = itertools.count(0, 3600)
    monkeypatch.setitem(stage_budget.BUDGET_CLOCKS, "cpu", lambda: float(next(hours)))
    tr = run_training(TrainingRequest(DATASET, "2d", 0, stage="1", schedule=ScheduleOverrides(num_epochs=3),
                                      budget=TimeBudget(max_minutes=10, clock="cpu"), final_validation=False,
                                      num_workers=0, output_folder=tmp_path / "cpu"))[0]
    assert tr.current_epoch == 1 and tr.num_epochs == 1
    tr = run_training(TrainingRequest(DATASET, "2d", 0, stage="1", schedule=ScheduleOverrides(num_epochs=2),
                                      budget=TimeBudget(max_minutes=10, clock="wall"), final_validation=False,
                                      num_workers=0, output_folder=tmp_path / "wall"))[0]
    assert tr.current_epoch == 2


def test_ema_horizon_follows_run_length(toy):
    from diffoseg_auto.training.trainer import DiffOSegTrainer

    plans = tiny_plans()
    plans.configurations["2d"].training.ema_decay = 0.999
    def trainer(epochs: int, iterations: int) -> DiffOSegTrainer:
        request = TrainingRequest(DATASET, "2d", 0, schedule=ScheduleOverrides(epochs, iterations))
        return DiffOSegTrainer(plans, request, 1, torch.device("cpu"))

    short = trainer(10, 50)
    assert short.ema_decay() == pytest.approx(0.98)  # 1 - 10 / 500
    long = trainer(100, 250)
    assert long.ema_decay() == 0.999  # the plans' decay once the run is long enough


def test_progress_title_shows_end_of_stage_metrics_in_fixed_order():
    from diffoseg_auto.training.logger import final_metrics_title

    title = final_metrics_title({"Dice_soft": 0.8, "GED": 0.25, "Dice_rater_strict": None, "other": 1.0})
    assert title == "end-of-stage validation: GED 0.250, Dice_soft 0.800"
