"""Training augmentation (batchgenerators) and the background/in-process augmenter.

Spatial transforms act on ``data`` and on ALL raters' ``seg`` channels with the same random
parameters (labels with order-0 interpolation, background outside the image), so rater
disagreement is preserved. ``rater_mask`` and ``keys`` pass through untouched.

batchgenerators transforms draw from numpy's global RNG; the trainer seeds it per epoch for
the in-process path (``num_workers == 0``), which makes that path deterministic.
"""
from __future__ import annotations

import math
import random

import numpy as np
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (BrightnessMultiplicativeTransform,
                                                         ContrastAugmentationTransform, GammaTransform)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

from diffoseg_auto.plans.plans import AugmentationPlan
from diffoseg_auto.utilities.worker_lifeline import LifelineTransform


def seed_augmentation(seed: int | list[int]) -> None:
    """Seed the global RNGs batchgenerators transforms draw from (numpy and python ``random``)."""
    np.random.seed(seed)
    random.seed(str(seed))


def sampling_patch_size(patch_size: list[int], aug: AugmentationPlan, spatial_dims: int) -> list[int]:
    """Patch the loader must cut so that rotation/scaling of it still covers ``patch_size`` (no empty corners)."""
    p = np.asarray(patch_size, dtype=float)
    if aug.p_rotation > 0:
        max_angle = min(max(abs(a) for a in aug.rotation_degrees), 90.0) / 180 * math.pi
        rot_axes = [0] if (spatial_dims == 2 or aug.rotate_only_in_plane) else [0, 1, 2]
        for ax in rot_axes:  # rotation around axis ax mixes the two other axes (2d: both axes)
            plane = [a for a in range(len(p)) if a != ax] if spatial_dims == 3 else [0, 1]
            a, b = p[plane[0]], p[plane[1]]
            ext = [max(abs(a * math.cos(t)) + abs(b * math.sin(t)) for t in np.linspace(0, max_angle, 16)),
                   max(abs(a * math.sin(t)) + abs(b * math.cos(t)) for t in np.linspace(0, max_angle, 16))]
            p[plane[0]], p[plane[1]] = max(p[plane[0]], ext[0]), max(p[plane[1]], ext[1])
    if aug.p_scaling > 0:
        p = p * max(1.0, max(aug.scaling))  # scale > 1 samples a larger field of view
    return [int(math.ceil(x)) for x in p]


class SegToUint8(AbstractTransform):
    """Interpolated (float) label maps back to uint8 class values."""

    def __call__(self, **data_dict):
        data_dict["seg"] = np.rint(data_dict["seg"]).astype(np.uint8)
        data_dict["data"] = data_dict["data"].astype(np.float32, copy=False)
        return data_dict


def get_training_transforms(patch_size: list[int], aug: AugmentationPlan, spatial_dims: int) -> Compose:
    deg = [a / 180 * math.pi for a in aug.rotation_degrees]
    in_plane = spatial_dims == 2 or aug.rotate_only_in_plane
    transforms: list[AbstractTransform] = [
        SpatialTransform(
            list(patch_size), patch_center_dist_from_border=None, do_elastic_deform=False,
            do_rotation=aug.p_rotation > 0, angle_x=tuple(deg),
            angle_y=(0.0, 0.0) if in_plane else tuple(deg), angle_z=(0.0, 0.0) if in_plane else tuple(deg),
            p_rot_per_axis=1.0, do_scale=aug.p_scaling > 0, scale=tuple(aug.scaling),
            border_mode_data="constant", border_cval_data=0, order_data=3,
            border_mode_seg="constant", border_cval_seg=0, order_seg=0, random_crop=False,
            p_el_per_sample=0, p_scale_per_sample=aug.p_scaling, p_rot_per_sample=aug.p_rotation),
        GaussianNoiseTransform(p_per_sample=aug.p_noise),
        GaussianBlurTransform((0.5, 1.0), different_sigma_per_channel=True, p_per_sample=aug.p_blur, p_per_channel=0.5),
        BrightnessMultiplicativeTransform(multiplier_range=(0.75, 1.25), p_per_sample=aug.p_brightness),
        ContrastAugmentationTransform(p_per_sample=aug.p_contrast),
        GammaTransform((0.7, 1.5), invert_image=False, per_channel=True, retain_stats=True, p_per_sample=aug.p_gamma),
    ]
    if aug.mirror_axes:
        transforms.append(MirrorTransform(tuple(aug.mirror_axes)))
    transforms.append(SegToUint8())
    return Compose(transforms)


def get_validation_transforms() -> Compose:
    return Compose([SegToUint8()])


def make_augmenter(loader, transform: Compose, num_workers: int, seed: int = 0):
    """In-process (deterministic) when ``num_workers <= 0``, else batchgenerators background workers."""
    if num_workers <= 0:
        return SingleThreadedAugmenter(loader, transform)
    # the lifeline makes the workers exit when the trainer dies (kill -9 gives it no chance to stop them)
    return NonDetMultiThreadedAugmenter(loader, LifelineTransform(transform), num_workers, num_cached=max(2, num_workers),
                                        seeds=[seed + i for i in range(num_workers)], pin_memory=False)
