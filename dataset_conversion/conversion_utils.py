"""Shared converter logic: target folder handling, writing arrays with geometry, CLI plumbing.

Every converter and the toy generator go through these helpers so that overwrite
refusal, file naming and error reporting behave the same everywhere.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from diffoseg_auto.errors import UserError
from diffoseg_auto.io.image_io import write_image, write_seg
from diffoseg_auto.paths import raw_root
from diffoseg_auto.utilities.dataset_name_id import dataset_name

logger = logging.getLogger(__name__)


class ConversionError(UserError, RuntimeError):
    """Bad converter input (missing files, wrong layout); the message names the file and the fix."""


class TargetExistsError(ConversionError):
    """The output dataset folder exists and --overwrite was not given."""


def target_folder(dataset_id: int, name: str, raw_folder: str | Path | None = None) -> Path:
    """$diffoseg_raw/DatasetXXX_Name (or ``raw_folder``/DatasetXXX_Name)."""
    root = Path(raw_folder) if raw_folder is not None else raw_root()
    try:
        return root / dataset_name(dataset_id, name)
    except ValueError as e:
        raise ConversionError(str(e)) from None


def prepare_target_folder(dataset_id: int, name: str, overwrite: bool = False,
                          raw_folder: str | Path | None = None) -> Path:
    """Create an empty DatasetXXX_Name with imagesTr/ and labelsTr/ and return it.

    Refuses when the folder already exists (unless ``overwrite``) or when another dataset
    already uses the same id (that would make ``-d ID`` ambiguous later).
    """
    folder = target_folder(dataset_id, name, raw_folder)
    root = folder.parent
    if root.is_dir():
        prefix = f"Dataset{int(dataset_id):03d}_"
        clash = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix) and p.name != folder.name)
        if clash:
            raise ConversionError(
                f"{folder}: dataset id {int(dataset_id)} is already used by {clash} in {root}. "
                "Choose another id with -d or remove that dataset."
            )
    if folder.exists():
        if not overwrite:
            raise TargetExistsError(
                f"{folder}: already exists. Pass --overwrite to replace it (its contents are deleted) "
                "or choose another id/name."
            )
        shutil.rmtree(folder)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir(parents=True)
    return folder


def geometry_props(spacing: Sequence[float]) -> dict:
    """Props for image_io writers: ``spacing`` in array axis order, zero origin, identity direction."""
    ndim = len(spacing)
    return {
        "spacing": [float(s) for s in spacing],
        "origin": [0.0] * ndim,
        "direction": np.eye(ndim).flatten().tolist(),
    }


def write_image_array(arr: np.ndarray, out_file: str | Path, spacing: Sequence[float] | None = None) -> None:
    """Write one image channel (spatial array, array axis order) atomically.

    Volumetric formats get float32; natural formats (.png, ...) must be given uint8.
    """
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32, copy=False)
    spacing = spacing if spacing is not None else [1.0] * arr.ndim
    write_image(arr, geometry_props(spacing), out_file)


def write_label_array(seg: np.ndarray, out_file: str | Path, spacing: Sequence[float] | None = None) -> None:
    """Write one rater's label map (uint8 values 0..K-1) atomically."""
    seg = np.asarray(seg)
    spacing = spacing if spacing is not None else [1.0] * seg.ndim
    write_seg(seg.astype(np.uint8), geometry_props(spacing), out_file)


def add_target_arguments(parser: argparse.ArgumentParser, default_name: str | None) -> None:
    """-d ID, -n NAME and --overwrite, identical for every converter."""
    parser.add_argument("-d", "--dataset_id", type=int, required=True, help="dataset id (0-999) of the output DatasetXXX_Name")
    if default_name is None:
        parser.add_argument("-n", "--name", required=True, help="dataset name (letters, digits, '_' and '-')")
    else:
        parser.add_argument("-n", "--name", default=default_name, help=f"dataset name (default: {default_name})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder of the same name")


def run_cli(fn: Callable[[], Path]) -> int:
    """Run a converter and print where the dataset went (errors: see diffoseg_auto.cli.console)."""
    out = fn()
    logger.info(f"Wrote dataset to {out}")
    return 0


def read_mask_gray(path: str | Path) -> tuple[np.ndarray, dict]:
    """Read a mask that may be stored as RGB (some tools save masks that way) as one gray channel."""
    from diffoseg_auto.io.image_io import read_image_file

    arr, props = read_image_file(path)
    return (arr[0] if arr.shape[0] == 1 else arr.mean(0)), props


def binarize(mask: np.ndarray, threshold: float, invert: bool = False) -> np.ndarray:
    """uint8 0/1: ``mask > threshold``, or ``mask < threshold`` for dark-object masks (``invert``)."""
    return ((mask < threshold) if invert else (mask > threshold)).astype(np.uint8)


def file_stem(path: str | Path) -> str:
    """File name without its (possibly double, e.g. .nii.gz) supported ending."""
    from diffoseg_auto.io.image_io import file_ending_of

    name = Path(path).name
    return name[: -len(file_ending_of(name))]


def sanitize_case_name(name: str) -> str:
    """Case identifiers become file names: keep letters, digits, '_', '-' and '.'."""
    import re

    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ConversionError(f"{path}: {what} folder does not exist. Check the path given on the command line.")
    return path
