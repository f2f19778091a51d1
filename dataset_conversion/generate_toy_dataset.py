"""A small synthetic multi-rater dataset with systematic, known rater styles.

Each case shows 1-3 smooth ellipse/ellipsoid blobs of varying contrast on a noisy
background. The ground truth is the union of the object masks (``num_classes=3``: label 2
is an inner core, half the radii). Raters annotate with fixed styles, in this order:

=====================  =====================================================================
rater0_dilate          dilates the true object by 2 px (Euclidean distance <= 2; distances and
                       sigmas are physical, 1 unit = 1 in-plane px, so anisotropy is respected)
rater1_erode           erodes the true object by 2 px
rater2_smooth          Gaussian-smooths the mask (sigma 2 px), thresholds at 0.5: rounder outlines
rater3_miss_small      overlooks the small objects (equivalent radius below the gap between the
                       small and the large size range), and leaves ~15% of cases unannotated
                       (no label file)
=====================  =====================================================================

With more than 4 raters the styles cycle with stronger settings (cycle c: 2+c px,
sigma 2+c, miss threshold x(1+0.25c), 15%+5c% missing cases), e.g. ``rater4_dilate``.
Fewer raters take the first ones. Everything is deterministic given ``seed``.
Case ``toy_{2p}`` and ``toy_{2p+1}`` form patient ``patient_{p}`` in ``case_groups``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sys
from scipy import ndimage

from dataset_conversion.conversion_utils import (
    ConversionError, prepare_target_folder, run_cli, write_image_array, write_label_array,
)
from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
from diffoseg_auto.utilities.command_runner import run_command

RATER_STYLES = ("dilate", "erode", "smooth", "miss_small")
BASE_MISSING_FRACTION = 0.15
FILE_ENDING = ".nii.gz"


@dataclass(frozen=True)
class RaterStyle:
    name: str           # folder name, e.g. rater0_dilate
    kind: str           # one of RATER_STYLES
    strength: float     # px (dilate/erode), sigma (smooth), threshold factor (miss_small)
    missing_fraction: float  # share of cases this rater leaves unannotated


def rater_styles(num_raters: int) -> list[RaterStyle]:
    """The first ``num_raters`` styles; styles repeat with stronger settings beyond 4."""
    out = []
    for k in range(num_raters):
        kind, cycle = RATER_STYLES[k % 4], k // 4
        strength = 1.0 + 0.25 * cycle if kind == "miss_small" else 2.0 + cycle
        missing = BASE_MISSING_FRACTION + 0.05 * cycle if kind == "miss_small" else 0.0
        out.append(RaterStyle(f"rater{k}_{kind}", kind, strength, missing))
    return out


def _object_mask(shape: tuple[int, ...], spacing: np.ndarray, center: np.ndarray, radii: np.ndarray,
                 rotation: np.ndarray) -> np.ndarray:
    """Rotated ellipse/ellipsoid; center and radii in physical units (1 unit = 1 in-plane px)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing)], indexing="ij"), -1)
    local = (grid - center) @ rotation
    return ((local / radii) ** 2).sum(-1) <= 1.0


def _equivalent_radius(mask: np.ndarray, spacing: np.ndarray) -> float:
    """Radius (physical units) of the disk/ball with the same area/volume."""
    n = float(mask.sum()) * float(np.prod(spacing))
    return np.sqrt(n / np.pi) if mask.ndim == 2 else (3 * n / (4 * np.pi)) ** (1 / 3)


def _synthesize_case(rng: np.random.Generator, shape: tuple[int, ...], spacing: np.ndarray, size: int,
                     num_classes: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Image (float32), per-object label maps (0..K-1) and the object radii classes."""
    ndim = len(shape)
    extent = np.array(shape) * spacing
    # small objects are big enough to matter in Dice (a rater who skips them is not a copy of the
    # others) and their size range is separate from the large one, so "small" is well defined
    r_small = (max(2.0, 0.06 * size), max(2.5, 0.08 * size))
    r_large = (0.1 * size, 0.2 * size) if ndim == 2 else (0.15 * size, 0.25 * size)
    num_objects = int(rng.integers(1, 4))
    image = rng.normal(0.0, 0.25, size=shape)
    objects = []
    for i in range(num_objects):
        small = i > 0 and rng.random() < 0.5  # the first object is always large: no empty case
        radius = rng.uniform(*(r_small if small else r_large))
        radii = radius * rng.uniform(0.8, 1.2, size=ndim)
        radii[0] = max(radii[0], 1.01 * spacing[0])  # never thinner than one slice
        center = np.array([rng.uniform(min(radius + 1, e / 2), max(e - radius - 1, e / 2)) for e in extent])
        rotation, _ = np.linalg.qr(rng.normal(size=(ndim, ndim)))
        obj = _object_mask(shape, spacing, center, radii, rotation)
        if not obj.any():  # tiny anisotropic ellipsoid fell between slices: keep its centre voxel
            obj[tuple(np.clip(np.round(center / spacing).astype(int), 0, np.array(shape) - 1))] = True
        seg = obj.astype(np.uint8)
        contrast = rng.uniform(0.6, 1.6)
        image += contrast * ndimage.gaussian_filter(obj.astype(float), 1.0)
        if num_classes == 3:
            core = _object_mask(shape, spacing, center, radii * 0.5, rotation) & obj
            seg[core] = 2
            image += 0.6 * contrast * ndimage.gaussian_filter(core.astype(float), 1.0)
        objects.append(seg)
    image = ndimage.gaussian_filter(image, 0.5).astype(np.float32)
    return image, objects, np.array(r_small[1] + r_large[0]) / 2


def _levels(seg: np.ndarray, num_classes: int) -> list[np.ndarray]:
    return [seg >= c for c in range(1, num_classes)]


def _from_levels(levels: list[np.ndarray]) -> np.ndarray:
    """Nested binary masks (class >= c) -> label map; inner levels are clipped to outer ones."""
    out = np.zeros(levels[0].shape, np.uint8)
    inside = np.ones(levels[0].shape, bool)
    for lvl in levels:
        inside &= lvl
        out += inside
    return out


def _apply_style(style: RaterStyle, objects: list[np.ndarray], num_classes: int, small_radius: float,
                 spacing: np.ndarray) -> np.ndarray:
    """One rater's label map from the per-object ground truth (distances in physical units)."""
    if style.kind == "miss_small":
        kept = [o for o in objects if _equivalent_radius(o > 0, spacing) >= small_radius * style.strength]
        truth = np.max(np.stack(kept), 0) if kept else np.zeros_like(objects[0])
        return truth.astype(np.uint8)
    truth = np.max(np.stack(objects), 0)
    levels = []
    for lvl in _levels(truth, num_classes):
        if style.kind == "dilate":
            lvl = ndimage.distance_transform_edt(~lvl, sampling=spacing) <= style.strength
        elif style.kind == "erode":
            lvl = ndimage.distance_transform_edt(lvl, sampling=spacing) > style.strength
        else:
            lvl = ndimage.gaussian_filter(lvl.astype(float), style.strength / spacing) >= 0.5
        levels.append(lvl)
    return _from_levels(levels)


def generate_toy_dataset(output_folder: Path, dim: int = 2, num_cases: int = 20, num_raters: int = 4,
                         image_size: int | None = None, seed: int = 0, num_classes: int = 2,
                         anisotropic: bool = False) -> Path:
    """Write a complete raw dataset into ``output_folder`` (which must be empty or absent).

    ``anisotropic``: spacing 2.0 along the first axis (and half as many voxels there), to
    exercise anisotropy handling; otherwise spacing 1. Returns ``output_folder``.
    """
    if dim not in (2, 3):
        raise ConversionError(f"generate_toy_dataset: dim must be 2 or 3, got {dim}")
    if num_classes not in (2, 3):
        raise ConversionError(f"generate_toy_dataset: num_classes must be 2 or 3, got {num_classes}")
    if num_cases < 1 or num_raters < 1:
        raise ConversionError("generate_toy_dataset: need at least one case and one rater")
    output_folder = Path(output_folder)
    if output_folder.exists() and any(output_folder.iterdir()):
        raise ConversionError(f"{output_folder}: not empty. Choose an empty folder (or use --overwrite from the CLI).")
    size = int(image_size or (64 if dim == 2 else 32))
    if size < 16:
        raise ConversionError(f"generate_toy_dataset: image_size must be >= 16, got {size}")
    spacing = np.ones(dim)
    shape = [size] * dim
    if anisotropic:
        spacing[0], shape[0] = 2.0, size // 2
    styles = rater_styles(num_raters)
    rng = np.random.default_rng(seed)
    # which cases each rater leaves out, decided up front so that case content does not depend on it
    missing = {}
    for s in styles:
        n_missing = int(round(s.missing_fraction * num_cases)) if num_cases > 1 else 0
        missing[s.name] = set(rng.choice(num_cases, size=n_missing, replace=False).tolist())
    # a case every rater skipped would have no label at all: give it back to the first rater that skipped it
    for i in range(num_cases):
        if all(i in missing[s.name] for s in styles):
            missing[styles[0].name].discard(i)
    cases = [f"toy_{i:03d}" for i in range(num_cases)]
    (output_folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(cases):
        image, objects, small_radius = _synthesize_case(rng, tuple(shape), spacing, size, num_classes)
        write_image_array(image, output_folder / "imagesTr" / f"{case}_0000{FILE_ENDING}", spacing)
        for s in styles:
            if i in missing[s.name]:
                continue
            seg = _apply_style(s, objects, num_classes, float(small_radius), spacing)
            write_label_array(seg, output_folder / "labelsTr" / s.name / f"{case}{FILE_ENDING}", spacing)
    for s in styles:  # a rater who skipped every case still has its (empty) folder
        (output_folder / "labelsTr" / s.name).mkdir(parents=True, exist_ok=True)
    labels = {"background": 0, "object": 1} if num_classes == 2 else {"background": 0, "object": 1, "core": 2}
    write_dataset_json(output_folder, DatasetDescription(
        name=output_folder.name,
        description=f"Synthetic {dim}D multi-rater toy dataset (seed {seed}); rater styles: "
                    + ", ".join(s.name for s in styles),
        channel_names={"0": "toy"},
        labels=labels,
        raters=[s.name for s in styles],
        num_training=num_cases,
        file_ending=FILE_ENDING,
        case_groups={c: f"patient_{i // 2:03d}" for i, c in enumerate(cases)},
    ))
    return output_folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Generate a synthetic multi-rater dataset in $diffoseg_raw/DatasetID_NAME.")
    p.add_argument("-d", "--dataset_id", type=int, required=True, help="dataset id (0-999)")
    p.add_argument("-n", "--name", default=None, help="dataset name (default: Toy2D / Toy3D)")
    p.add_argument("--dim", type=int, choices=(2, 3), default=2)
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--raters", type=int, default=4)
    p.add_argument("--size", type=int, default=None, help="image edge length (default 64 for 2D, 32 for 3D)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_classes", type=int, choices=(2, 3), default=2)
    p.add_argument("--anisotropic", action="store_true", help="spacing 2 along the first axis")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder of the same name")
    a = p.parse_args(argv)
    name = a.name or f"Toy{a.dim}D"

    def run() -> Path:
        folder = prepare_target_folder(a.dataset_id, name, a.overwrite)
        for sub in ("imagesTr", "labelsTr"):  # generate_toy_dataset wants an empty folder
            (folder / sub).rmdir()
        return generate_toy_dataset(folder, a.dim, a.cases, a.raters, a.size, a.seed, a.num_classes, a.anisotropic)

    return run_cli(run)


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_generate_toy_dataset", main))
