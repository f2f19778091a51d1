"""A tiny preprocessed multi-rater dataset and plans for the trainer, DDP and data-loader tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from diffoseg_auto.plans.plans import (ArchitecturePlan, AugmentationPlan, ConfigurationPlan, DiffusionPlan, Plans,
                                       Stage2Plan, TrainingPlan, save_plans)
from diffoseg_auto.preprocessing.case_storage import save_case
from diffoseg_auto.utilities.file_ops import save_json

DATASET = "Dataset901_TrainToy"


def tiny_plans(num_epochs: int = 1) -> Plans:
    arch = ArchitecturePlan(n_stages=2, features_per_stage=[4, 8], kernel_sizes=[[3, 3], [3, 3]],
                            strides=[[1, 1], [2, 2]], n_conv_per_stage=[1, 1], n_conv_per_stage_decoder=[1],
                            time_embedding_dim=8, num_prompts=3, prompt_dim=4, x_t_width_divisor=2)
    cfg = ConfigurationPlan(
        data_identifier="DiffOSegPlans_2d", spatial_dims=2, patch_size=[32, 32], batch_size=2, spacing=[1.0, 1.0],
        median_image_size_in_voxels=[32, 32], normalization_schemes=["zscore"], use_mask_for_norm=[False],
        resampling_order_data=3, resampling_order_seg=1, architecture=arch,
        diffusion=DiffusionPlan(num_timesteps=10, sampling_steps=2, num_samples=2),
        training=TrainingPlan(num_epochs=num_epochs, iterations_per_epoch=2, num_val_iterations_per_epoch=1,
                              ema_decay=0.5, num_val_samples=2, initial_lr=1e-2),
        stage2=Stage2Plan(num_epochs=1, iterations_per_epoch=2, initial_lr=5e-3),
        augmentation=AugmentationPlan(mirror_axes=[0, 1], rotation_degrees=[-20, 20]))
    cfg.inference.use_mirroring = False
    return Plans(dataset_name=DATASET, plans_name="DiffOSegPlans", num_classes=2, raters=["r0", "r1", "r2"],
                 num_input_channels=1, original_median_spacing=[1.0, 1.0], original_median_shape=[32, 32],
                 foreground_intensity_properties_per_channel={}, configurations={"2d": cfg})


def make_toy_cases(folder: Path, n: int = 4, shape=(32, 32), seed: int = 0) -> list[str]:
    """n cases, 1 channel, K=2, R=3 raters; rater 2 is missing in every case (rater_mask [1,1,0]).

    Foreground is a bright square (data 1 inside, 0 outside plus small noise); rater 1's square is
    shifted by one voxel against rater 0's, so the raters disagree on a thin band."""
    rng = np.random.RandomState(seed)
    cases = []
    for i in range(n):
        lo = 8 + i % 3
        data = (0.1 * rng.randn(1, *shape)).astype(np.float32)
        seg = np.zeros((3, *shape), np.uint8)
        sl = tuple(slice(lo, lo + 10) for _ in shape)
        sl1 = tuple(slice(lo + 1, lo + 11) for _ in shape)
        data[(0,) + sl] += 1
        seg[(0,) + sl] = 1
        seg[(1,) + sl1] = 1
        union = seg[:2].max(0)
        props = {"class_locations": {1: np.argwhere(union == 1)}}
        case = f"case_{i:03d}"
        save_case(folder, case, data, seg, np.array([True, True, False]), props)
        cases.append(case)
    return cases


def write_toy_training_dataset(preprocessed_root: Path) -> list[str]:
    """Preprocessed cases, plans, dataset.json (with patient groups) and a fingerprint for DATASET."""
    pp = Path(preprocessed_root) / DATASET
    cases = make_toy_cases(pp / "DiffOSegPlans_2d", n=4)
    save_plans(tiny_plans(), pp / "DiffOSegPlans.json")
    save_json({"raters": ["r0", "r1", "r2"], "labels": {"background": 0, "lesion": 1},
               "case_groups": {c: f"p{i // 2}" for i, c in enumerate(cases)}}, pp / "dataset.json")
    save_json({"toy": True}, pp / "dataset_fingerprint.json")
    return cases
