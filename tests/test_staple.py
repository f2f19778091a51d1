"""The raters' STAPLE consensus (SimpleITK's filters) and the U-Net trained on it (ConsensusUNetSTAPLETrainer)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from diffoseg_auto.evaluation.metrics import majority_vote
from diffoseg_auto.evaluation.staple import staple_consensus, staple_probability
from diffoseg_auto.inference.model_loading import load_trained_model
from diffoseg_auto.network.baselines.consensus_unet import STAPLEConsensusUNet
from diffoseg_auto.training.baselines.consensus_unet import ConsensusUNetSTAPLETrainer, consensus_targets
from diffoseg_auto.training.run_training import run_training
from diffoseg_auto.training.training_request import ScheduleOverrides, TrainingRequest
from diffoseg_auto.training.trainer_registry import get_trainer_class
from support.toy_training import DATASET


def _masks() -> np.ndarray:
    """Three raters of one 6x6 image: rater 1 marks everything, raters 0 and 2 overlap partly."""
    r = np.zeros((3, 6, 6), np.uint8)
    r[0, 1:6, 1:6] = 1
    r[1] = 1
    r[2, :, 0:4] = 1
    return r


def _sitk_staple(masks: np.ndarray) -> np.ndarray:
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    return sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in masks]))


def test_binary_staple_is_simpleitks_filter():
    masks = _masks()
    np.testing.assert_allclose(staple_probability(masks), _sitk_staple(masks))
    np.testing.assert_array_equal(staple_consensus(masks, 2), (_sitk_staple(masks) > 0.5).astype(np.uint8))
    # STAPLE weighs the raters by their estimated performance, it does not count them: where raters 0 and 1 mark
    # columns 4-5 (a vote of 2 of 3), STAPLE says background (p 0.31); row 0's columns 4-5, marked by rater 1 only,
    # are foreground (p 0.99)
    diff = staple_consensus(masks, 2).astype(int) - majority_vote(masks, 2)
    assert (diff[1:, 4:] == -1).all() and (diff[0, 4:] == 1).all() and (diff[:, :4] == 0).all()


def test_multilabel_staple_is_simpleitks_filter_with_undecided_voxels_voted():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (3, 8, 8)).astype(np.uint8)
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(255)
    expected = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in labels]))
    got = staple_consensus(labels, 3)
    decided = expected != 255
    np.testing.assert_array_equal(got[decided], expected[decided])
    np.testing.assert_array_equal(got[~decided], majority_vote(labels, 3)[~decided])
    assert got.max() <= 2


def test_degenerate_raters_need_no_em():
    one = _masks()[:1]
    np.testing.assert_array_equal(staple_consensus(one, 2), one[0])
    empty = np.zeros((3, 4, 4), np.uint8)  # SimpleITK returns NaN here (prior 0)
    assert staple_consensus(empty, 2).sum() == 0 and np.isfinite(staple_probability(empty)).all()
    full = np.ones((2, 4, 4), np.uint8)
    assert staple_consensus(full, 2).all() and staple_consensus(np.full((2, 3, 3), 2, np.uint8), 3).min() == 2
    with pytest.raises(ValueError):
        staple_consensus(np.zeros((0, 4, 4), np.uint8), 2)


def test_staple_trainer_targets_are_the_annotating_raters_staple():
    assert get_trainer_class("ConsensusUNetSTAPLETrainer") is ConsensusUNetSTAPLETrainer
    seg = np.stack([_masks(), _masks()[[1, 0, 2]]])
    rater_mask = np.array([[True, True, True], [True, True, False]])
    targets = consensus_targets(seg, rater_mask, 2, ConsensusUNetSTAPLETrainer.fuse)
    np.testing.assert_array_equal(targets[0], staple_consensus(_masks(), 2))
    np.testing.assert_array_equal(targets[1], staple_consensus(_masks()[[1, 0]], 2))  # rater 2 left out


@pytest.mark.slow  # trains two iterations
def test_staple_trainer_trains_and_its_checkpoint_rebuilds_its_network(toy):
    run_training(TrainingRequest(DATASET, "2d", 0, trainer="ConsensusUNetSTAPLETrainer",
                                 schedule=ScheduleOverrides(num_epochs=1, iterations_per_epoch=2, val_iterations=1),
                                 final_validation=False, device="cpu", num_workers=0))
    folder = toy["results"] / DATASET / "ConsensusUNetSTAPLETrainer__DiffOSegPlans__2d"
    ck = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    assert ck["trainer_name"] == "ConsensusUNetSTAPLETrainer" and np.isfinite(ck["logging"]["train_losses"][0])
    nets, *_ = load_trained_model(folder, [0], 1)
    assert type(nets[0]) is STAPLEConsensusUNet
