"""Planner decisions for fixed fingerprints (one test per rule of documentation/planning.md)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from diffoseg_auto.plans.plans import load_plans
from planners.experiment_planner import (ExperimentPlanner, load_planner_class, normalization_for_channel,
                                         num_samples_for_raters, schedule_shift_for_patch,
                                         target_spacing_from_fingerprint)
from planners.memory_model import DenoiserShape, estimate_memory_bytes
from planners.sampling_budget import planned_sampling_budget
from planners.topology import get_pool_and_conv_props

FLOAT_RANGE = {"min": -3.2, "max": 1000.5, "integer_valued": False}


def fingerprint(spacings, shapes, intensity_range=FLOAT_RANGE, rel=1.0) -> dict:
    return {"num_cases": len(spacings), "spacings": spacings, "shapes_after_crop": shapes,
            "intensity_range_per_channel": {"0": intensity_range}, "median_relative_size_after_cropping": rel,
            "foreground_intensity_properties_per_channel": {"0": {"mean": 0.0, "std": 1.0}}}


def dataset_json(num_raters=4, channel="MRI") -> dict:
    return {"channel_names": {"0": channel}, "labels": {"background": 0, "x": 1},
            "raters": [f"r{i}" for i in range(num_raters)]}


def plan(fp, dj=None, gpu=8.0):
    return ExperimentPlanner(dj or dataset_json(), fp, "Dataset001_X", gpu).plan()


# ------------------------------------------------------------------ target spacing
def test_target_spacing_is_median_when_isotropic() -> None:
    assert target_spacing_from_fingerprint([[1, 1, 1], [2, 1, 1], [1.5, 0.5, 0.5]], [[10, 10, 10]] * 3) == [1.5, 1.0, 1.0]


def test_anisotropic_axis_takes_10th_percentile() -> None:
    spacings = [[5, 0.8, 0.8]] * 8 + [[2.5, 0.8, 0.8], [3, 0.8, 0.8]]
    # median 5 > 3 * 0.8 and 30 slices * 3 < 256: np.percentile(z, 10) = 2.5 + 0.9 * 0.5
    assert target_spacing_from_fingerprint(spacings, [[30, 256, 256]] * 10) == pytest.approx([2.95, 0.8, 0.8])


def test_anisotropic_spacing_but_many_slices_keeps_median() -> None:
    spacings = [[5, 0.8, 0.8]] * 8 + [[2.5, 0.8, 0.8], [3, 0.8, 0.8]]
    assert target_spacing_from_fingerprint(spacings, [[300, 256, 256]] * 10) == pytest.approx([5, 0.8, 0.8])


# ------------------------------------------------------------------ normalisation
def test_normalization_rules() -> None:
    assert normalization_for_channel("CT", FLOAT_RANGE) == "ct"
    assert normalization_for_channel("ct", {"min": 0, "max": 255, "integer_valued": True}) == "ct"
    assert normalization_for_channel("RGB", {"min": 0, "max": 255, "integer_valued": True}) == "rescale_0_1"
    assert normalization_for_channel("MRI", {"min": 0, "max": 4095, "integer_valued": True}) == "zscore"
    assert normalization_for_channel("MRI", FLOAT_RANGE) == "zscore"


def test_mask_for_norm_only_when_cropping_removed_a_lot() -> None:
    fp = fingerprint([[1, 1]] * 4, [[64, 64]] * 4, rel=0.5)
    assert plan(fp).configurations["2d"].use_mask_for_norm == [True]
    fp["median_relative_size_after_cropping"] = 0.9
    assert plan(fp).configurations["2d"].use_mask_for_norm == [False]


# ------------------------------------------------------------------ topology
def test_topology_isotropic_and_anisotropic() -> None:
    n, strides, kernels, patch, div = get_pool_and_conv_props([1, 1], [128, 128])
    assert n == [5, 5] and len(strides) == 6 and patch == [128, 128] and div == [32, 32]
    assert kernels == [[3, 3]] * 6
    n, strides, kernels, patch, div = get_pool_and_conv_props([3, 0.7, 0.7], [40, 224, 192])
    assert n == [3, 5, 5]
    assert strides[:3] == [[1, 1, 1], [1, 2, 2], [1, 2, 2]]  # low-res axis waits until spacing is comparable
    assert kernels[:3] == [[1, 3, 3], [1, 3, 3], [3, 3, 3]]
    assert get_pool_and_conv_props([1, 1], [36, 36])[3] == [40, 40]  # 36-18-9-5: 3 pools, padded to a multiple of 8


# ------------------------------------------------------------------ whole configurations
def test_isotropic_3d() -> None:
    p = plan(fingerprint([[1, 1, 1]] * 20, [[256, 256, 256]] * 20))
    assert set(p.configurations) == {"2d", "3d_fullres", "3d_lowres"}
    full = p.configurations["3d_fullres"]
    assert full.spacing == [1.0, 1.0, 1.0]
    assert full.patch_size == [112, 128, 128]  # 128^3 exceeds 8 GB at batch 2 in the memory model
    assert full.batch_size == 2
    assert full.architecture.n_stages == 6
    assert full.architecture.features_per_stage == [32, 64, 128, 256, 320, 320]
    # 112 = 7 * 2^4 allows 4 poolings along axis 0, 128 allows 5 along the others
    assert full.architecture.strides == [[1, 1, 1]] + [[2, 2, 2]] * 4 + [[1, 2, 2]]
    assert full.augmentation.mirror_axes == [0, 1, 2] and full.augmentation.rotation_degrees == [-30.0, 30.0]
    assert not full.inference.use_mirroring and full.inference.step_size == 0.5  # TTA off: results.md
    low = p.configurations["3d_lowres"]
    assert low.spacing[0] > 1.0 and len(set(low.spacing)) == 1
    # lowres median image ~ 4 patches
    assert np.prod(low.median_image_size_in_voxels) <= 4 * np.prod(full.patch_size) * 1.01
    assert p.configurations["2d"].slice_axis == 0 and p.configurations["2d"].patch_size == [256, 256]
    assert p.configurations["2d"].spatial_dims == 2


def test_small_3d_has_no_lowres() -> None:
    p = plan(fingerprint([[1, 1, 1]] * 20, [[32, 32, 32]] * 20))
    assert set(p.configurations) == {"2d", "3d_fullres"}
    assert p.configurations["3d_fullres"].patch_size == [32, 32, 32]


def test_anisotropic_3d() -> None:
    spacings = [[5, 0.8, 0.8]] * 8 + [[2.5, 0.8, 0.8], [3, 0.8, 0.8]]
    p = plan(fingerprint(spacings, [[30, 256, 256]] * 10))
    full = p.configurations["3d_fullres"]
    assert full.spacing == pytest.approx([2.95, 0.8, 0.8])
    assert full.architecture.kernel_sizes[0] == [1, 3, 3]
    assert full.architecture.strides[1] == [1, 2, 2]
    assert full.augmentation.mirror_axes == [1, 2] and full.augmentation.rotate_only_in_plane
    assert p.configurations["2d"].slice_axis == 0


def test_lowres_axis_not_first_keeps_its_index() -> None:
    spacings = [[0.8, 0.8, 5.0]] * 10
    p = plan(fingerprint(spacings, [[256, 256, 30]] * 10))
    two = p.configurations["2d"]
    assert two.slice_axis == 2 and two.median_image_size_in_voxels == [256, 256]
    assert p.configurations["3d_fullres"].augmentation.mirror_axes == [0, 1]


def test_2d_128_with_4_raters() -> None:
    p = plan(fingerprint([[1, 1]] * 20, [[128, 128]] * 20), dataset_json(4))
    assert set(p.configurations) == {"2d"}
    c = p.configurations["2d"]
    assert c.patch_size == [128, 128]
    assert c.architecture.n_stages == 6 and c.architecture.features_per_stage[-1] == 512
    assert c.batch_size == 4  # 5% of 20 images x 4 raters, one patch each
    assert c.diffusion.num_timesteps == 250 and c.diffusion.schedule == "cosine"
    assert c.diffusion.schedule_shift == 1.0
    assert c.diffusion.sampling_steps == planned_sampling_budget()["sampling_steps"]  # the one-SE rule's pick
    assert c.diffusion.num_samples == 16 >= 4
    assert c.augmentation.mirror_axes == [0, 1] and c.augmentation.rotation_degrees == [-180.0, 180.0]
    assert c.architecture.denoiser == "cached_encoder"
    assert c.training.optimizer == "adamw" and c.training.consensus_target == "vote"
    assert c.training.x0_ce_weight == 0.1  # hybrid loss by default; the reference configuration sets 0
    assert c.slice_axis is None


def test_large_2d_patch_smaller_than_image() -> None:
    p = plan(fingerprint([[1, 1]] * 100, [[811, 1024]] * 100))
    c = p.configurations["2d"]
    assert c.patch_size == [512, 512]
    assert c.architecture.n_stages == 8
    assert c.diffusion.schedule_shift == 4.0  # sqrt(512^2 / 128^2)
    assert 2 <= c.batch_size <= 16


def test_smaller_gpu_gives_smaller_or_equal_patch() -> None:
    fp = fingerprint([[1, 1, 1]] * 20, [[256, 256, 256]] * 20)
    big = plan(fp, gpu=8.0).configurations["3d_fullres"]
    small = plan(fp, gpu=4.0).configurations["3d_fullres"]
    assert np.prod(small.patch_size) < np.prod(big.patch_size)
    arch = small.architecture
    net = DenoiserShape(arch.features_per_stage, arch.kernel_sizes, arch.strides, arch.n_conv_per_stage,
                        arch.n_conv_per_stage_decoder, 1, 2, 4, num_prompts=arch.num_prompts)
    assert estimate_memory_bytes(small.patch_size, small.batch_size, net) <= 4.0 * 1024 ** 3


def test_memory_model_grows_with_raters_and_batch() -> None:
    def net(raters: int) -> DenoiserShape:
        return DenoiserShape([32, 64, 128], [[3, 3]] * 3, [[1, 1], [2, 2], [2, 2]], [2, 2, 2], [2, 2], 1, 2, raters)

    one = estimate_memory_bytes([64, 64], 1, net(0))
    two = estimate_memory_bytes([64, 64], 2, net(0))
    assert two > one
    assert estimate_memory_bytes([64, 64], 1, net(8)) > one


def test_diffusion_rules() -> None:
    assert schedule_shift_for_patch([128, 128]) == 1.0
    assert schedule_shift_for_patch([64, 64]) == 1.0
    assert schedule_shift_for_patch([256, 256]) == 2.0
    assert schedule_shift_for_patch([128, 128, 128]) == pytest.approx(2.828, abs=1e-3)
    assert num_samples_for_raters(4) == 16 and num_samples_for_raters(12) == 24


def test_batch_capped_by_five_percent_of_dataset() -> None:
    c = plan(fingerprint([[1, 1]] * 2000, [[64, 64]] * 2000)).configurations["2d"]
    assert c.batch_size == 400  # 0.05 * 2000 images * 4 raters / 1 patch each; memory allows more
    few = plan(fingerprint([[1, 1]] * 5, [[64, 64]] * 5)).configurations["2d"]
    assert few.batch_size == 2  # 0.05 * 5 * 4 = 1 patch: the minimum of 2 applies


def test_plans_validate_and_round_trip(tmp_path) -> None:
    from diffoseg_auto.plans.plans import save_plans

    p = plan(fingerprint([[1, 1, 1]] * 20, [[256, 256, 256]] * 20))
    save_plans(p, tmp_path / "p.json")
    again = load_plans(tmp_path / "p.json")
    assert again.to_dict() == p.to_dict()
    assert again.planner == "planners.experiment_planner.ExperimentPlanner"


def test_planning_is_deterministic_and_fast() -> None:
    fp = fingerprint([[5, 0.8, 0.8]] * 8 + [[2.5, 0.8, 0.8], [3, 0.8, 0.8]], [[30, 256, 256]] * 10)
    t = time.perf_counter()
    a = json.dumps(plan(fp).to_dict(), sort_keys=True)
    b = json.dumps(plan(fp).to_dict(), sort_keys=True)
    assert a == b
    assert time.perf_counter() - t < 2.0


class _BigPromptPlanner(ExperimentPlanner):
    def num_prompts(self) -> int:
        return 64


def test_plugin_planner_by_dotted_path() -> None:
    cls = load_planner_class("tests.test_planner._BigPromptPlanner")
    p = cls(dataset_json(), fingerprint([[1, 1]] * 4, [[64, 64]] * 4), "Dataset001_X").plan()
    assert p.configurations["2d"].architecture.num_prompts == 64
    with pytest.raises(ValueError, match="no class"):
        load_planner_class("planners.experiment_planner.Nope")
    with pytest.raises(ValueError, match="dotted path"):
        load_planner_class("Nope")
