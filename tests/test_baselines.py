"""Baseline trainers (consensus U-Net, multi-head U-Net, Probabilistic U-Net): 2 training iterations on
the toy set, then diffoseg_predict's folders (samples/, consensus/, raters/), their shapes and values."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from dataset_conversion.generate_toy_dataset import generate_toy_dataset
from diffoseg_auto.dataset.raw_dataset import RawDataset
from diffoseg_auto.evaluation.prediction_folder import load_samples_npz
from diffoseg_auto.inference.baseline_predictor import BaselinePredictor
from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
from diffoseg_auto.inference.prediction_outputs import OutputFolderInUseError
from diffoseg_auto.io.image_io import read_seg
from diffoseg_auto.network.baselines import BASELINE_NETWORKS
from diffoseg_auto.network.baselines.base import BaselineNetwork, majority_labels
from diffoseg_auto.training.baselines.losses import dice_ce_per_sample, masked_mean, soft_dice_per_sample
from diffoseg_auto.training.run_training import run_training
from diffoseg_auto.training.training_request import ScheduleOverrides, TrainingRequest
from diffoseg_auto.training.splits import select_fold
from diffoseg_auto.training.fold_guard import FoldAlreadyTrainedError
from diffoseg_auto.training.trainer_registry import get_trainer_class
from diffoseg_auto.utilities.argument_checks import ArgumentError
from diffoseg_auto.utilities.file_ops import load_json
from support.pipeline import make_plans_tiny
from support.toy_training import tiny_plans
from planners.plan_and_preprocess_entrypoints import plan_and_preprocess

DS_ID, N = 940, 6  # 6 samples > 4 raters: the multi-head U-Net cycles its heads


@pytest.fixture
def toy_planned(env_folders):
    raw = generate_toy_dataset(env_folders["raw"] / "Dataset940_ToyBaselines", dim=2, num_cases=6, num_raters=4, seed=5)
    plan_and_preprocess(["-d", str(DS_ID), "-np", "1", "-c", "2d"])
    make_plans_tiny(env_folders["preprocessed"] / raw.name / "DiffOSegPlans.json", [32, 32], 0.5)
    return env_folders, raw


def _train_and_predict(env, raw, trainer: str, tmp_path):
    schedule = ScheduleOverrides(num_epochs=1, iterations_per_epoch=2, val_iterations=1)
    trainers = run_training(TrainingRequest(DS_ID, "2d", 0, trainer=trainer, schedule=schedule, device="cpu",
                                            num_workers=0))
    assert [t.stage for t in trainers] == [1]  # one stage, even for the default --stage both
    fold = env["results"] / raw.name / f"{trainer}__DiffOSegPlans__2d" / "fold_0"
    ck = torch.load(fold / "checkpoint_final.pth", weights_only=False)
    assert ck["trainer_name"] == trainer and ck["epoch"] == 1 and (fold / "stage1" / "checkpoint_final.pth").is_file()
    assert np.isfinite(ck["logging"]["train_losses"][0])
    summary = load_json(fold / "stage1" / "validation" / "summary.json")
    assert {"GED", "Dice_soft", "Dice_rater_strict", "ECE", "Brier", "Uncertainty_NCC"} <= set(summary["metrics"])

    ds = RawDataset(raw)
    pp = env["preprocessed"] / raw.name
    _, val = select_fold(load_json(pp / "splits_final.json"), 0, ds.cases)
    inp = tmp_path / f"in_{trainer}"
    inp.mkdir()
    for case in val:
        for f in ds.image_files_by_case()[case]:
            shutil.copyfile(f, inp / f.name)
    out = tmp_path / f"pred_{trainer}"
    assert predict_from_folder(inp, out, DS_ID, "2d", [0], trainer=trainer, num_samples=N, save_samples=True,
                               device="cpu", use_mirroring=False, num_processes_preprocessing=1,
                               num_processes_export=1) == val
    per_case = {}
    for case in val:
        samples = load_samples_npz(out / "samples" / f"{case}.npz")
        cons, _ = read_seg(out / "consensus" / f"{case}.nii.gz")
        raters = np.stack([read_seg(out / "raters" / r / f"{case}.nii.gz")[0] for r in ds.raters])
        assert samples.shape == (N, 64, 64) and cons.shape == raters.shape[1:] == (64, 64)
        assert set(np.unique(samples)) <= {0, 1} and set(np.unique(raters)) <= {0, 1}
        np.testing.assert_array_equal(cons, majority_labels(samples, 2))  # consensus = vote of the samples
        per_case[case] = (samples, raters)
    return ck, per_case


@pytest.mark.slow
def test_consensus_unet_trains_and_predicts_identical_samples(toy_planned, tmp_path):
    env, raw = toy_planned
    ck, per_case = _train_and_predict(env, raw, "ConsensusUNetTrainer", tmp_path)
    assert ck["network_weights"]["unet.decoder.seg_layers.1.weight"].shape[0] == 2  # K outputs
    for samples, raters in per_case.values():
        assert all(np.array_equal(s, samples[0]) for s in samples)
        assert all(np.array_equal(r, samples[0]) for r in raters)
    # one label map repeated: its overconfidence is scored (ECE, Brier); its uncertainty is constant (NCC n/a)
    summary = load_json(env["results"] / raw.name / "ConsensusUNetTrainer__DiffOSegPlans__2d" / "fold_0" / "stage1"
                        / "validation" / "summary.json")
    assert isinstance(summary["metrics"]["ECE"], float) and summary["metrics"]["Uncertainty_NCC"] == "n/a"
    assert summary["reliability"] is not None

    # the rules of diffoseg_train / diffoseg_predict hold for a baseline too
    with pytest.raises(FoldAlreadyTrainedError):
        run_training(TrainingRequest(DS_ID, "2d", 0, trainer="ConsensusUNetTrainer",
                                     schedule=ScheduleOverrides(num_epochs=1), device="cpu", num_workers=0))
    inp, out = tmp_path / "in_ConsensusUNetTrainer", tmp_path / "pred_ConsensusUNetTrainer"
    kw = dict(trainer="ConsensusUNetTrainer", num_samples=N, save_samples=True, device="cpu", use_mirroring=False,
              num_processes_preprocessing=1, num_processes_export=1)
    with pytest.raises(OutputFolderInUseError):
        predict_from_folder(inp, out, DS_ID, "2d", [0], **kw)
    with pytest.raises(ArgumentError, match="--num_samples"):
        predict_from_folder(inp, out, DS_ID, "2d", [0], **{**kw, "num_samples": 0})
    case = sorted(per_case)[0]
    before = (out / "consensus" / f"{case}.nii.gz").stat().st_mtime_ns
    predict_from_folder(inp, out, DS_ID, "2d", [0], continue_prediction=True, **kw)  # every case finished: none redone
    assert (out / "consensus" / f"{case}.nii.gz").stat().st_mtime_ns == before
    rater_file = out / "raters" / RawDataset(raw).raters[0] / f"{case}.nii.gz"
    rater_file.unlink()
    predict_from_folder(inp, out, DS_ID, "2d", [0], overwrite=True, **kw)
    assert rater_file.is_file()


@pytest.mark.slow
def test_multihead_unet_has_one_head_per_rater(toy_planned, tmp_path):
    env, raw = toy_planned
    ck, per_case = _train_and_predict(env, raw, "MultiHeadUNetTrainer", tmp_path)
    assert ck["network_weights"]["unet.decoder.seg_layers.1.weight"].shape[0] == 4 * 2  # R heads x K classes
    for samples, raters in per_case.values():
        for n in range(N):  # samples are the heads, cycled
            np.testing.assert_array_equal(samples[n], raters[n % 4])


@pytest.mark.slow
def test_prob_unet_raters_are_the_majority_of_its_samples(toy_planned, tmp_path):
    env, raw = toy_planned
    ck, per_case = _train_and_predict(env, raw, "ProbUNetTrainer", tmp_path)
    assert ck["network_weights"]["prior.head.weight"].shape[0] == 2 * 6  # mean and log-std of a 6-d latent
    for samples, raters in per_case.values():
        for r in raters:
            np.testing.assert_array_equal(r, majority_labels(samples, 2))


def test_every_baseline_network_belongs_to_its_trainer():
    for name, net_cls in BASELINE_NETWORKS.items():
        cls = get_trainer_class(name)
        assert cls.__name__ == name and cls.network_class is net_cls and cls.is_baseline


def test_baseline_refuses_stage_2(toy_planned):
    with pytest.raises(ArgumentError, match="single stage"):
        run_training(TrainingRequest(DS_ID, "2d", 0, stage="2", trainer="ConsensusUNetTrainer", device="cpu",
                                     num_workers=0))


def test_losses_values():
    labels = torch.tensor([[[0, 1], [1, 1]]])  # (1, 2, 2): 3 foreground voxels
    perfect = torch.stack([1 - labels, labels], 1).float()
    assert soft_dice_per_sample(perfect, labels).item() == pytest.approx(1.0)
    half = torch.full((1, 2, 2, 2), 0.5)
    # foreground Dice = 2 * 1.5 / (2 + 3)
    assert soft_dice_per_sample(half, labels).item() == pytest.approx(0.6, abs=1e-5)
    # logits 0: CE = log 2 per voxel, soft Dice 0.6
    assert dice_ce_per_sample(torch.zeros(1, 2, 2, 2), labels).item() == pytest.approx(np.log(2) + 0.4, abs=1e-5)
    assert masked_mean(torch.tensor([1.0, 5.0, 3.0]), torch.tensor([True, False, True])).item() == 2.0


def test_majority_labels_ties_go_to_background():
    labels = np.array([[1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(majority_labels(labels, 2), [0, 1, 0])


class _ThresholdNet(BaselineNetwork):
    """Foreground where the image exceeds 0 (or eps[n, 0] for sample n when stochastic)."""

    def __init__(self, latent_dim: int = 0):
        super().__init__()
        self.latent_dim = latent_dim

    def window_probabilities(self, x, eps):
        thresholds = torch.zeros(1) if eps is None else eps[:, 0]
        fg = (x[:, None, 0] > thresholds.view(1, -1, *([1] * (x.ndim - 2)))).float()  # (B, M, *P)
        return torch.stack([1 - fg, fg], 2)

    def to_predictions(self, outputs, num_samples, num_raters, num_classes):
        return outputs, outputs


@pytest.mark.parametrize("slice_axis", [None, 0])
def test_baseline_predictor_blends_windows_exactly(slice_axis):
    cfg = tiny_plans().configurations["2d"]  # patch 32 x 32, mirror axes (0, 1)
    cfg.slice_axis = slice_axis
    rng = np.random.RandomState(0)
    data = rng.randn(1, 50, 70).astype(np.float32) if slice_axis is None else rng.randn(1, 3, 40, 45).astype(np.float32)
    out = BaselinePredictor(_ThresholdNet(), cfg, use_mirroring=True, step_size=0.5).predict_case(data, num_samples=4)
    np.testing.assert_array_equal(out, (data > 0).astype(np.uint8))  # one output, padding undone, windows agree


def test_baseline_predictor_keeps_one_latent_per_sample_over_all_windows():
    cfg = tiny_plans().configurations["2d"]
    data = np.random.RandomState(1).randn(1, 64, 80).astype(np.float32)
    out = BaselinePredictor(_ThresholdNet(latent_dim=2), cfg, use_mirroring=False).predict_case(data, 5, seed=3)
    assert out.shape == (5, 64, 80)
    for sample in out:  # one threshold for the whole image: every foreground value exceeds every background value
        assert data[0][sample == 1].min(initial=np.inf) > data[0][sample == 0].max(initial=-np.inf)
    assert len({s.sum() for s in out}) > 1  # the samples differ


def test_only_the_consensus_unets_have_a_soft_consensus_beyond_their_samples():
    """The consensus U-Nets' (majority or STAPLE target) one deterministic output has a softmax that their repeated
    samples do not show; the stochastic and multi-head baselines' spread is in their samples (real_data.py compare
    saves only the first)."""
    from diffoseg_auto.network.baselines import BASELINE_NETWORKS

    assert [cls.__name__ for cls in BASELINE_NETWORKS.values() if cls.soft_consensus] == ["ConsensusUNet",
                                                                                          "STAPLEConsensusUNet"]
    assert len(BASELINE_NETWORKS) == 4
