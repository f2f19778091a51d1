"""Experiment planner: fingerprint + dataset.json -> typed DiffOSeg plans.

Every rule is explained in documentation/planning.md; the methods below are small and named
after the rule so that a plug-in planner (``-pl my_pkg.MyPlanner``) can override one of them.
"""
from __future__ import annotations

import importlib
import math
from copy import deepcopy
from functools import cached_property
from typing import Sequence

import numpy as np

from diffoseg_auto.configuration import ANISOTROPY_THRESHOLD, lowres_axis
from diffoseg_auto.errors import InvalidArgumentError, MissingFileError
from diffoseg_auto.plans.plans import (AugmentationPlan, ArchitecturePlan, ConfigurationPlan, DiffusionPlan,
                                       InferencePlan, Plans, Stage2Plan, TrainingPlan)
from planners.memory_model import DenoiserShape, estimate_memory_bytes
from planners.sampling_budget import planned_sampling_budget
from planners.topology import get_pool_and_conv_props

PLANS_NAME = "DiffOSegPlans"


def target_spacing_from_fingerprint(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]],
                                    threshold: float = ANISOTROPY_THRESHOLD) -> list[float]:
    """Median spacing; for anisotropic data the low-res axis takes its 10th percentile instead
    (nnU-Net: fewer interpolated slices, but never finer than the in-plane spacing)."""
    spacings = np.asarray(spacings, float)
    target = np.median(spacings, axis=0)
    if spacings.shape[1] < 3:
        return [float(s) for s in target]
    target_size = np.median(np.asarray(shapes, float) * spacings / target, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    aniso_spacing = target[worst] > threshold * min(target[others])
    aniso_voxels = target_size[worst] * threshold < min(target_size[others])
    if aniso_spacing and aniso_voxels:
        p10 = float(np.percentile(spacings[:, worst], 10))
        if p10 < max(target[others]):
            p10 = max(max(target[others]), p10) + 1e-5
        target[worst] = p10
    return [float(s) for s in target]


def normalization_for_channel(channel_name: str, intensity_range: dict) -> str:
    """'CT' -> ct; integer intensities within 0..255 (8-bit natural images) -> rescale_0_1; else zscore."""
    if channel_name.strip().upper() == "CT":
        return "ct"
    if intensity_range.get("integer_valued") and intensity_range["min"] >= 0 and intensity_range["max"] <= 255:
        return "rescale_0_1"
    return "zscore"


def schedule_shift_for_patch(patch_size: Sequence[int]) -> float:
    """Noise-schedule shift grows with resolution: sqrt(voxels / 128^2) in 2D, sqrt(voxels / 64^3) in 3D, >= 1."""
    ref = 128 ** 2 if len(patch_size) == 2 else 64 ** 3
    return round(max(1.0, math.sqrt(float(np.prod(patch_size)) / ref)), 3)


def num_samples_for_raters(num_raters: int) -> int:
    """N = max(16, 2 R): enough samples for stable GED / matching, always >= the number of raters."""
    return max(16, 2 * num_raters)


class ExperimentPlanner:
    """nnU-Net-style planner for the DiffOSeg denoiser. Override single methods in a subclass."""

    plans_name = PLANS_NAME
    base_features = 32
    max_features_3d = 320
    max_features_2d = 512
    min_feature_map_size = 4
    reference_patch_voxels_3d = 256 ** 3
    reference_patch_voxels_2d = 2048 ** 2
    max_2d_patch_edge = 512
    min_batch_size = 2
    max_dataset_fraction_per_batch = 0.05
    lowres_trigger_fraction = 0.25
    lowres_target_patches = 4
    num_timesteps = 250
    # None: what the one-standard-error rule picks on the measured curves (planners/sampling_budget.py,
    # planners/sampling_evidence.json); a subclass may fix them
    sampling_steps: int | None = None
    num_samples_per_rater: int | None = None

    def __init__(self, dataset_json: dict, fingerprint: dict, dataset_name: str, gpu_memory_target_gb: float = 8.0,
                 plans_name: str | None = None) -> None:
        self.dataset_json = dataset_json
        self.fingerprint = fingerprint
        self.dataset_name = dataset_name
        self.gpu_memory_target_gb = float(gpu_memory_target_gb)
        if plans_name:
            self.plans_name = plans_name
        self.num_raters = len(dataset_json["raters"])
        self.num_classes = max(int(v) for v in dataset_json["labels"].values()) + 1
        self.num_channels = len(dataset_json["channel_names"])
        self.num_cases = int(fingerprint["num_cases"])

    @cached_property
    def sampling_budget(self) -> dict[str, int]:
        """The one-SE rule's S and samples per rater on the shipped evidence, read once per planner."""
        return planned_sampling_budget()

    # ------------------------------------------------------------------ dataset-level rules
    def determine_target_spacing(self) -> list[float]:
        return target_spacing_from_fingerprint(self.fingerprint["spacings"], self.fingerprint["shapes_after_crop"])

    def median_shape_at(self, spacing: Sequence[float]) -> list[int]:
        sp = np.asarray(self.fingerprint["spacings"], float)
        sh = np.asarray(self.fingerprint["shapes_after_crop"], float)
        return [int(round(s)) for s in np.median(sh * sp / np.asarray(spacing, float), axis=0)]

    def determine_normalization(self) -> tuple[list[str], list[bool]]:
        names = self.dataset_json["channel_names"]
        ranges = self.fingerprint["intensity_range_per_channel"]
        schemes = [normalization_for_channel(names[str(c)] if str(c) in names else names[c], ranges[str(c)])
                   for c in range(self.num_channels)]
        # z-score inside the non-zero mask only when cropping removed a lot of background (nnU-Net's rule)
        crop_mattered = self.fingerprint["median_relative_size_after_cropping"] < 0.75
        return schemes, [s == "zscore" and crop_mattered for s in schemes]

    # ------------------------------------------------------------------ topology and batch
    def features_per_stage(self, n_stages: int, dim: int) -> list[int]:
        cap = self.max_features_3d if dim == 3 else self.max_features_2d
        return [min(self.base_features * 2 ** i, cap) for i in range(n_stages)]

    def initial_patch_size(self, spacing: Sequence[float], median_shape: Sequence[int]) -> list[int]:
        dim = len(spacing)
        tmp = 1.0 / np.asarray(spacing, float)
        ref = self.reference_patch_voxels_3d if dim == 3 else self.reference_patch_voxels_2d
        patch = tmp * (ref / np.prod(tmp)) ** (1.0 / dim)
        patch = np.minimum(np.round(patch), median_shape)
        if dim == 2:
            patch = np.minimum(patch, self.max_2d_patch_edge)
        return [max(1, int(p)) for p in patch]

    def _memory(self, patch, batch, features, kernels, strides) -> float:
        n = len(features)
        net = DenoiserShape(features, kernels, strides, [2] * n, [2] * (n - 1), self.num_channels, self.num_classes,
                            self.num_raters, num_prompts=self.num_prompts())
        return estimate_memory_bytes(patch, batch, net)

    def num_prompts(self) -> int:
        return max(8, self.num_raters)

    def plan_topology_and_batch(self, spacing: Sequence[float], median_shape: Sequence[int],
                                dataset_voxels: float | None = None) -> dict:
        """nnU-Net's loop: start large, shrink the axis that covers most of the image until batch 2 fits.

        ``dataset_voxels``: voxels of the whole (resampled) dataset for the 5% batch cap; default
        median image x number of cases (a 2d configuration of 3D data passes the volumes' count)."""
        budget = self.gpu_memory_target_gb * 1024 ** 3
        patch = self.initial_patch_size(spacing, median_shape)
        _, strides, kernels, patch, divisible = get_pool_and_conv_props(spacing, patch, self.min_feature_map_size)
        features = self.features_per_stage(len(strides), len(spacing))
        while self._memory(patch, self.min_batch_size, features, kernels, strides) > budget:
            ratio = np.asarray(patch, float) / np.asarray(median_shape, float)
            axis = int(np.argmax(ratio))
            tmp = deepcopy(patch)
            tmp[axis] -= divisible[axis]
            if tmp[axis] < self.min_feature_map_size:
                break  # cannot shrink further; the batch rule below still uses the minimum batch
            _, _, _, _, divisible = get_pool_and_conv_props(spacing, tmp, self.min_feature_map_size)
            patch[axis] -= divisible[axis]
            _, strides, kernels, patch, divisible = get_pool_and_conv_props(spacing, patch, self.min_feature_map_size)
            features = self.features_per_stage(len(strides), len(spacing))
        per_sample = (self._memory(patch, 2, features, kernels, strides) - self._memory(patch, 1, features, kernels, strides))
        fixed = self._memory(patch, 0, features, kernels, strides)
        batch_by_memory = int((budget - fixed) // per_sample)
        if dataset_voxels is None:
            dataset_voxels = float(np.prod(median_shape)) * self.num_cases
        batch_by_data = int(round(self.max_dataset_fraction_per_batch * dataset_voxels / float(np.prod(patch))))
        batch = max(self.min_batch_size, min(batch_by_memory, batch_by_data))
        return {"patch_size": [int(p) for p in patch], "strides": strides, "kernel_sizes": kernels,
                "features": features, "batch_size": int(batch), "batch_by_memory": batch_by_memory,
                "batch_by_data": batch_by_data,
                "estimated_memory_gb": round(self._memory(patch, batch, features, kernels, strides) / 1024 ** 3, 3)}

    # ------------------------------------------------------------------ sections
    def architecture(self, topo: dict) -> ArchitecturePlan:
        n = len(topo["strides"])
        return ArchitecturePlan(n_stages=n, features_per_stage=topo["features"], kernel_sizes=topo["kernel_sizes"],
                                strides=topo["strides"], n_conv_per_stage=[2] * n, n_conv_per_stage_decoder=[2] * (n - 1),
                                num_prompts=self.num_prompts(), denoiser="cached_encoder")

    def diffusion(self, patch_size: Sequence[int]) -> DiffusionPlan:
        return DiffusionPlan(num_timesteps=self.num_timesteps, schedule="cosine",
                             schedule_shift=schedule_shift_for_patch(patch_size),
                             sampling_steps=self.sampling_steps or self.sampling_budget["sampling_steps"],
                             num_samples=num_samples_for_raters(self.num_raters), final_step="denoise",
                             x0_given_xt="bayes")

    def augmentation(self, dim: int, anisotropic_axis: int | None) -> AugmentationPlan:
        if dim == 2:
            return AugmentationPlan(mirror_axes=[0, 1], rotation_degrees=[-180.0, 180.0])
        if anisotropic_axis is not None:
            inplane = [a for a in range(3) if a != anisotropic_axis]
            return AugmentationPlan(mirror_axes=inplane, rotation_degrees=[-180.0, 180.0], rotate_only_in_plane=True)
        return AugmentationPlan(mirror_axes=[0, 1, 2], rotation_degrees=[-30.0, 30.0])

    def training(self) -> TrainingPlan:
        # x0_ce_weight 0.1: the auxiliary x_0 cross-entropy made Stage II learn rater styles that
        # decide whole objects (toy dataset, documentation/results.md); the paper's loss is KL only
        return TrainingPlan(optimizer="adamw", consensus_target="vote", num_val_samples=max(4, self.num_raters),
                            x0_ce_weight=0.1)

    def stage2(self) -> Stage2Plan:
        return Stage2Plan(num_samples_per_rater=self.num_samples_per_rater
                          or self.sampling_budget["samples_per_rater"])

    def build_configuration(self, name: str, data_spacing: list[float], net_spacing: list[float],
                            median_shape: list[int], slice_axis: int | None = None) -> ConfigurationPlan:
        """``data_spacing``: target spacing of the stored volume; ``net_spacing``/``median_shape``: what the network sees."""
        dim = len(net_spacing)
        # The 5% cap counts every (case, rater) annotation: a diffusion batch element is an (image, t,
        # rater subset) draw, so two patches of one image in a batch still carry different targets.
        volume_voxels = float(np.prod(self.median_shape_at(data_spacing))) * self.num_cases * self.num_raters
        topo = self.plan_topology_and_batch(net_spacing, median_shape, volume_voxels)
        schemes, use_mask = self.determine_normalization()
        aniso = None if dim == 2 else lowres_axis(net_spacing)
        aug = self.augmentation(dim, aniso)
        diff = self.diffusion(topo["patch_size"])
        notes = {
            "spacing": "median spacing of the dataset" + (
                f"; axis {aniso} is anisotropic (> {ANISOTROPY_THRESHOLD}x): 10th percentile rule, kernels 1 and "
                "nearest-neighbour resampling along it" if aniso is not None else ""),
            "patch_and_batch": (f"patch shrunk from the image size until batch {self.min_batch_size} fits "
                                f"{self.gpu_memory_target_gb} GB (model: {topo['estimated_memory_gb']} GB at batch "
                                f"{topo['batch_size']}); batch = min(memory {topo['batch_by_memory']}, 5% of dataset "
                                f"voxels x raters {topo['batch_by_data']}), at least {self.min_batch_size}"),
            "diffusion": (f"T={diff.num_timesteps} as in the DiffOSeg paper; cosine schedule shifted by "
                          f"{diff.schedule_shift} for a {topo['patch_size']} patch; S={diff.sampling_steps} respaced "
                          f"x0-parameterised steps: the smallest S within one standard error of the best GED on the "
                          f"tuning curves (planners/sampling_evidence.json); N={diff.num_samples} "
                          f"samples >= {self.num_raters} raters"),
        }
        if slice_axis is not None:
            notes["slice_axis"] = f"2d slices along axis {slice_axis} (the lowest-resolution axis; no transpose)"
        return ConfigurationPlan(
            data_identifier=f"{self.plans_name}_{name}", spatial_dims=dim, patch_size=topo["patch_size"],
            batch_size=topo["batch_size"], spacing=[float(s) for s in data_spacing],
            median_image_size_in_voxels=[int(s) for s in median_shape], normalization_schemes=schemes,
            use_mask_for_norm=use_mask, resampling_order_data=3, resampling_order_seg=1,
            architecture=self.architecture(topo), diffusion=diff, training=self.training(), stage2=self.stage2(),
            augmentation=aug, inference=InferencePlan(step_size=0.5, use_mirroring=False),
            slice_axis=slice_axis, notes=notes)

    def plan_2d(self, spacing: list[float], median_shape: list[int]) -> ConfigurationPlan:
        if len(spacing) == 2:
            return self.build_configuration("2d", spacing, spacing, median_shape)
        axis = lowres_axis(spacing)
        axis = 0 if axis is None else axis
        inplane = [i for i in range(3) if i != axis]
        return self.build_configuration("2d", spacing, [spacing[i] for i in inplane],
                                        [median_shape[i] for i in inplane], slice_axis=axis)

    def plan_3d_lowres(self, spacing: list[float], fullres: ConfigurationPlan) -> ConfigurationPlan | None:
        median = self.median_shape_at(spacing)
        if np.prod(fullres.patch_size) >= self.lowres_trigger_fraction * np.prod(median):
            return None
        lowres = np.asarray(spacing, float)
        target_voxels = self.lowres_target_patches * np.prod(fullres.patch_size)
        while np.prod(self.median_shape_at(lowres)) > target_voxels:
            ratio = lowres.max() / lowres
            if np.any(ratio > 2):
                lowres[ratio > 2] *= 1.01  # catch the fine axes up with the coarse one first
            else:
                lowres *= 1.01
        lowres_list = [float(round(s, 6)) for s in lowres]
        cfg = self.build_configuration("3d_lowres", lowres_list, lowres_list, self.median_shape_at(lowres_list))
        cfg.notes["lowres"] = (f"3d_fullres patch covers < {int(self.lowres_trigger_fraction * 100)}% of the median "
                               f"image: spacing raised in 1% steps until the image is ~{self.lowres_target_patches} patches")
        return cfg

    def plan(self) -> Plans:
        spacing = self.determine_target_spacing()
        median_shape = self.median_shape_at(spacing)
        configs = {"2d": self.plan_2d(spacing, median_shape)}
        if len(spacing) == 3:
            full = self.build_configuration("3d_fullres", spacing, spacing, median_shape)
            configs["3d_fullres"] = full
            low = self.plan_3d_lowres(spacing, full)
            if low is not None:
                configs["3d_lowres"] = low
        fp = self.fingerprint
        return Plans(
            dataset_name=self.dataset_name, plans_name=self.plans_name, num_classes=self.num_classes,
            raters=list(self.dataset_json["raters"]), num_input_channels=self.num_channels,
            original_median_spacing=[float(s) for s in np.median(np.asarray(fp["spacings"], float), 0)],
            original_median_shape=[int(round(s)) for s in np.median(np.asarray(fp["shapes_after_crop"], float), 0)],
            foreground_intensity_properties_per_channel=deepcopy(fp["foreground_intensity_properties_per_channel"]),
            configurations=configs, planner=f"{type(self).__module__}.{type(self).__qualname__}",
            label_names=dict(self.dataset_json["labels"]))


def load_planner_class(dotted: str) -> type:
    """'package.module.ClassName' -> the class (plug-ins by dotted path, no folder scanning)."""
    module_name, _, cls_name = dotted.rpartition(".")
    if not module_name:
        raise InvalidArgumentError(f"-pl '{dotted}': give a dotted path such as planners.experiment_planner.ExperimentPlanner")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InvalidArgumentError(f"-pl '{dotted}': cannot import module '{module_name}' ({e}). Is it installed / on PYTHONPATH?") from None
    cls = getattr(module, cls_name, None)
    if cls is None or not isinstance(cls, type):
        raise InvalidArgumentError(f"-pl '{dotted}': module '{module_name}' has no class '{cls_name}'")
    return cls


def plan_experiment(dataset: str | int, planner: str = "planners.experiment_planner.ExperimentPlanner",
                    gpu_memory_target_gb: float = 8.0, plans_name: str | None = None) -> Plans:
    """Read the fingerprint and dataset.json from $diffoseg_preprocessed/<name>/, write <plans_name>.json."""
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.plans.plans import save_plans
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from diffoseg_auto.dataset.raw_dataset import load_dataset_json
    from diffoseg_auto.dataset.fingerprint_file import FINGERPRINT_FILE, PLANNING_KEYS, load_fingerprint
    from planners.plans_backup import backup_replaced_plans

    name = resolve_dataset_name(dataset)
    folder = preprocessed_root() / name
    fp_file = folder / FINGERPRINT_FILE
    if not fp_file.is_file():
        raise MissingFileError(f"{fp_file}: missing. Run `diffoseg_extract_fingerprint -d {dataset}` first.")
    cls = load_planner_class(planner)
    p = cls(load_dataset_json(folder), load_fingerprint(fp_file, PLANNING_KEYS), name, gpu_memory_target_gb, plans_name).plan()
    backup_replaced_plans(folder / f"{p.plans_name}.json", p.to_dict())
    save_plans(p, folder / f"{p.plans_name}.json")
    return p
