"""Splits, targets, data loader and augmentation of diffoseg_auto.training (values, not smoke)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffoseg_auto.plans.plans import AugmentationPlan
from diffoseg_auto.training.augmentation import (get_training_transforms, make_augmenter, sampling_patch_size,
                                                   seed_augmentation)
from diffoseg_auto.training.data_loader import DiffOSegDataLoader, random_bbox
from diffoseg_auto.training.splits import SplitsError, get_or_create_splits, select_fold
from diffoseg_auto.training.targets import (consensus_targets, draw_rater_subset, fuse_by_vote, fuse_raters, one_hot_np,
                                            rater_targets)
from support.toy_training import make_toy_cases


# ---------------------------------------------------------------- splits

def test_splits_grouped_written_once_and_reused(tmp_path: Path):
    cases = [f"c{i}" for i in range(10)]
    groups = {c: f"patient{i // 2}" for i, c in enumerate(cases)}  # 5 patients x 2 cases
    splits = get_or_create_splits(tmp_path, cases, groups, num_folds=5, seed=1)
    assert len(splits) == 5
    assert sorted(c for s in splits for c in s["val"]) == sorted(cases)
    for s in splits:
        assert set(s["train"]).isdisjoint(s["val"])
        assert len({groups[c] for c in s["val"]}) == 1 and len(s["val"]) == 2  # whole patient per fold
    # reused verbatim, even when a new seed would give other folds
    on_disk = json.loads((tmp_path / "splits_final.json").read_text())
    assert on_disk == splits
    assert get_or_create_splits(tmp_path, cases, groups, num_folds=5, seed=999) == splits


def test_select_fold_all_and_errors(tmp_path: Path):
    cases = ["a", "b", "c", "d"]
    splits = get_or_create_splits(tmp_path, cases, None, num_folds=2)
    assert len(splits) == 2
    tr, va = select_fold(splits, "all", cases)
    assert tr == va == cases
    tr, va = select_fold(splits, 1, cases)
    assert sorted(tr + va) == cases and len(va) == 2
    with pytest.raises(SplitsError, match="Fold 5 is outside"):
        select_fold(splits, 5, cases)
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": ["zzz"], "val": ["a"]}]))
    with pytest.raises(SplitsError, match="zzz"):
        get_or_create_splits(tmp_path, cases, None)


# ---------------------------------------------------------------- targets

def test_vote_fuses_one_coherent_mask_with_threshold_from_union_to_intersection():
    seg = np.array([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], np.uint8)  # 3 raters, 5 voxels
    # the threshold k (votes needed) decides: 1 = union, 2 = majority of 3, 3 = intersection
    np.testing.assert_array_equal(fuse_by_vote(seg, 2, 1), [1, 1, 1, 0, 1])
    np.testing.assert_array_equal(fuse_by_vote(seg, 2, 2), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(fuse_by_vote(seg, 2, 3), [0, 1, 0, 0, 0])
    # random draws: every target is one-hot, and union, majority and intersection all occur
    rng = np.random.RandomState(0)
    seen = set()
    for _ in range(200):
        x0 = fuse_raters(seg, draw_rater_subset(np.ones(3, bool), rng), 2, "vote", rng)
        assert set(np.unique(x0)) <= {0.0, 1.0} and np.all(x0.sum(0) == 1)
        seen.add(tuple(x0[1].astype(int)))
    assert {(1, 1, 1, 0, 1), (1, 1, 1, 0, 0), (0, 1, 0, 0, 0)} <= seen
    # K = 3: per-class votes, the class with most votes where it reaches k, else background
    mc = np.array([[2, 1, 0], [2, 2, 1], [1, 2, 0]], np.uint8)
    np.testing.assert_array_equal(fuse_by_vote(mc, 3, 2), [2, 2, 0])
    np.testing.assert_array_equal(fuse_by_vote(mc, 3, 3), [0, 0, 0])
    np.testing.assert_array_equal(fuse_by_vote(mc, 3, 1), [2, 2, 1])
    with pytest.raises(ValueError, match="needs rng"):
        fuse_raters(seg, np.array([0, 1]), 2, "vote")


def test_soft_intersection_majority_values():
    seg = np.array([[0, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0]], np.uint8)  # 3 raters, 4 voxels
    soft = fuse_raters(seg, np.array([0, 1]), 2, "soft")
    np.testing.assert_allclose(soft[1], [0.5, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(soft.sum(0), 1.0)
    inter = fuse_raters(seg, np.array([0, 1, 2]), 2, "intersection")
    np.testing.assert_array_equal(inter[1], [0, 1, 0, 0])
    maj = fuse_raters(seg, np.array([0, 1, 2]), 2, "majority")
    np.testing.assert_array_equal(maj[1], [1, 1, 1, 0])
    tie = fuse_raters(seg, np.array([0, 1]), 2, "majority")  # 1:1 -> lower class (background)
    np.testing.assert_array_equal(tie[1], [0, 1, 0, 0])
    # multi-class intersection: disagreement on the class -> background
    mc = np.array([[2, 1], [2, 2]], np.uint8)
    np.testing.assert_array_equal(np.argmax(fuse_raters(mc, np.array([0, 1]), 3, "intersection"), 0), [2, 0])
    with pytest.raises(ValueError, match="consensus_target"):
        fuse_raters(seg, np.array([0]), 2, "mean")


def test_subsets_only_use_annotating_raters():
    rng = np.random.RandomState(0)
    mask = np.array([False, False, True])
    for _ in range(20):
        np.testing.assert_array_equal(draw_rater_subset(mask, rng), [2])
    seen = {tuple(draw_rater_subset(np.array([True, True, False]), rng)) for _ in range(200)}
    assert seen == {(0,), (1,), (0, 1)}
    seg = np.zeros((2, 3, 4, 4), np.uint8)
    seg[:, 2, :2] = 1  # only rater 2 has foreground: the top two rows
    rm = np.array([[False, False, True], [False, False, True]])
    x0 = consensus_targets(seg, rm, 2, "soft", rng)
    np.testing.assert_array_equal(x0[:, 1], seg[:, 2].astype(np.float32))
    onehot, ids = rater_targets(seg, rm, 2, rng)
    np.testing.assert_array_equal(ids, [2, 2])
    np.testing.assert_array_equal(onehot, one_hot_np(seg[:, 2], 2, axis=1))
    with pytest.raises(ValueError, match="no rater annotated"):
        rater_targets(seg, np.zeros((2, 3), bool), 2, rng)


# ---------------------------------------------------------------- loader

def test_crop_and_pad_and_bbox_values():
    # the loader's contract with acvl-utils: a spatial-only box on (C, *S), padded outside with 0
    from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

    a = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    out = crop_and_pad_nd(a, [[-1, 3], [2, 6]], 0)
    expected = np.zeros((1, 4, 4), np.float32)
    expected[0, 1:4, 0:2] = a[0, 0:3, 2:4]
    np.testing.assert_array_equal(out, expected)
    rng = np.random.RandomState(0)
    # image 4 smaller than patch 8: box is the padded, centred one
    assert random_bbox((4,), (8,), rng) == [[-2, 6]]
    # centred on a location, clipped to the image
    assert random_bbox((20, 20), (8, 8), rng, center=np.array([1, 10])) == [[0, 8], [6, 14]]


def test_loader_shapes_padding_foreground_and_determinism(tmp_path: Path):
    cases = make_toy_cases(tmp_path, n=3, shape=(12, 12))
    dl = DiffOSegDataLoader(tmp_path, cases, batch_size=4, patch_size=[16, 16], oversample_foreground_percent=1.0, seed=3)
    b = dl.generate_train_batch()
    assert b["data"].shape == (4, 1, 16, 16) and b["data"].dtype == np.float32
    assert b["seg"].shape == (4, 3, 16, 16) and b["seg"].dtype == np.uint8
    np.testing.assert_array_equal(b["rater_mask"], np.tile([True, True, False], (4, 1)))
    assert not b["seg"][:, 2].any()  # the missing rater stays empty
    assert (b["seg"][:, 0].reshape(4, -1).sum(1) > 0).all()  # foreground-forced patches
    assert (b["data"][:, :, :2] == 0).all()  # 12 -> 16: two padded rows on each side
    dl.set_epoch(5)
    first = dl.generate_train_batch()
    dl.set_epoch(5)
    again = dl.generate_train_batch()
    np.testing.assert_array_equal(first["data"], again["data"])
    assert first["keys"] == again["keys"]


def test_loader_slices_3d_for_2d_configuration(tmp_path: Path):
    cases = make_toy_cases(tmp_path, n=2, shape=(12, 16, 16))
    dl = DiffOSegDataLoader(tmp_path, cases, 2, [16, 16], oversample_foreground_percent=1.0, slice_axis=0, seed=0)
    b = dl.generate_train_batch()
    assert b["data"].shape == (2, 1, 16, 16) and b["seg"].shape == (2, 3, 16, 16)
    assert (b["seg"][:, :2].reshape(2, -1).max(1) == 1).all()  # foreground slice picked
    bad = DiffOSegDataLoader(tmp_path, cases, 1, [16, 16])
    with pytest.raises(ValueError, match="slice_axis"):
        bad.generate_train_batch()


def test_augmentation_consistent_across_raters_and_deterministic(tmp_path: Path):
    cases = make_toy_cases(tmp_path, n=2, shape=(32, 32))
    aug = AugmentationPlan(mirror_axes=[0, 1], p_rotation=1.0, p_scaling=1.0, rotation_degrees=[-30, 30])
    sp = sampling_patch_size([32, 32], aug, 2)
    assert sp[0] > 32 and sp == [sp[0], sp[0]]

    def run() -> dict:
        dl = DiffOSegDataLoader(tmp_path, cases, 2, sp, 1.0, seed=0)
        # make rater 2 an exact copy of rater 0 through the loader: the same transform must give the same map
        orig = dl.load_patch
        dl.load_patch = lambda c, f: (lambda d, s, m: (d, np.stack([s[0], s[1], s[0]]), m))(*orig(c, f))
        it = make_augmenter(dl, get_training_transforms([32, 32], aug, 2), num_workers=0)
        dl.set_epoch(1)
        seed_augmentation([7, 1])
        return next(it)

    a, b = run(), run()
    assert a["data"].shape == (2, 1, 32, 32) and a["seg"].dtype == np.uint8
    assert set(np.unique(a["seg"])) <= {0, 1}
    np.testing.assert_array_equal(a["seg"][:, 0], a["seg"][:, 2])
    np.testing.assert_array_equal(a["data"], b["data"])
    np.testing.assert_array_equal(a["seg"], b["seg"])


def test_ema_warmup_then_planned_decay():
    import torch

    from diffoseg_auto.training.ema import EMA

    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = EMA(net, 0.999)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)
    assert float(ema.model.weight) == pytest.approx(0.9)  # 0.1 * 0 + 0.9 * 1
    ema.num_updates = 100_000
    assert ema.current_decay() == 0.999  # warm-up over: the plans' decay
