"""Generic converter: a folder of images plus one folder of masks per rater -> raw dataset.

Masks are matched to images by file stem (``a.png`` <-> ``a.png`` / ``a.nii.gz``); a rater folder
without a file for an image means that rater did not annotate it (no label file is written).
PNG/TIF/BMP or volumetric (NIfTI, NRRD, MHA) inputs; the output file ending is the images' own
(all images must share one). Images are copied unchanged (an RGB PNG stays one file = 3 channels);
labels are written in their image's geometry.

Mask values: with ``--foreground_threshold T`` masks are binarised (``> T``; ``< T`` with
``--invert`` for dark objects; ``--invert`` alone uses T = 128). Without a threshold, mask values
are used as class labels and must be 0..K-1 over the whole dataset.
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import numpy as np
import sys

from dataset_conversion.conversion_utils import (
    ConversionError, binarize, file_stem, prepare_target_folder, read_mask_gray, require_dir, run_cli,
    sanitize_case_name,
)
from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
from diffoseg_auto.io.image_errors import ImageReadError
from diffoseg_auto.io.image_io import file_ending_of, read_image_file, write_seg
from diffoseg_auto.utilities.command_runner import run_command


def _index_folder(folder: Path) -> dict[str, Path]:
    """Stem -> file for every supported image file in ``folder``."""
    out = {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.is_file():
            continue
        try:
            stem = file_stem(f)
        except ImageReadError:
            continue  # not an image (notes, csv): ignored
        if stem in out:
            raise ConversionError(f"{f}: two files with stem '{stem}' in {folder}. Keep one.")
        out[stem] = f
    return out


def convert_folder(images_dir: str | Path, mask_dirs: list[str | Path], dataset_id: int, name: str,
                   rater_names: list[str] | None = None, foreground_threshold: float | None = None,
                   invert: bool = False, overwrite: bool = False) -> Path:
    """Write $diffoseg_raw/DatasetXXX_<name>; returns the folder."""
    images = _index_folder(require_dir(images_dir, "images"))
    if not images:
        raise ConversionError(f"{images_dir}: no image files (supported: .png, .tif, .nii.gz, .nrrd, .mha, ...).")
    endings = {file_ending_of(f) for f in images.values()}
    if len(endings) > 1:
        raise ConversionError(f"{images_dir}: images use several file types {sorted(endings)}. Convert them to one.")
    ending = endings.pop()
    mask_dirs = [require_dir(m, "mask") for m in mask_dirs]
    raters = list(rater_names) if rater_names else [re.sub(r"[^A-Za-z0-9_\-]", "_", m.name) for m in mask_dirs]
    if len(raters) != len(mask_dirs) or len(set(raters)) != len(raters):
        raise ConversionError(f"rater names {raters} must be unique and one per mask folder ({len(mask_dirs)}). "
                              "Use --rater_names.")
    masks = [_index_folder(m) for m in mask_dirs]
    for m, idx in zip(mask_dirs, masks):
        orphans = sorted(set(idx) - set(images))
        if orphans:
            raise ConversionError(f"{m}: mask(s) without image: {orphans[:5]}. Rename or remove them.")
    if invert and foreground_threshold is None:
        foreground_threshold = 128.0
    out = prepare_target_folder(dataset_id, name, overwrite)
    num_channels, values = None, {0}
    for stem, img in images.items():
        case = sanitize_case_name(stem)
        if not any(stem in idx for idx in masks):
            raise ConversionError(f"{img}: no rater has a mask for it. Add one or remove the image.")
        arr, props = read_image_file(img)
        if num_channels not in (None, arr.shape[0]):
            raise ConversionError(f"{img}: {arr.shape[0]} channel(s), earlier images have {num_channels}. "
                                  "All images need the same channels.")
        num_channels = arr.shape[0]
        shutil.copyfile(img, out / "imagesTr" / f"{case}_0000{ending}")
        for r, idx in zip(raters, masks):
            if stem not in idx:
                continue
            gray, _ = read_mask_gray(idx[stem])
            if list(gray.shape) != props["shape"]:
                raise ConversionError(f"{idx[stem]}: size {list(gray.shape)} differs from image {img} {props['shape']}.")
            if foreground_threshold is not None:
                seg = binarize(gray, foreground_threshold, invert)
            else:
                if not np.array_equal(gray, np.round(gray)) or gray.min() < 0 or gray.max() > 255:
                    raise ConversionError(f"{idx[stem]}: mask values are not integer labels. Use --foreground_threshold.")
                seg = gray.astype(np.uint8)
            values |= set(np.unique(seg).tolist())
            write_seg(seg, props, out / "labelsTr" / r / f"{case}{ending}")
    if sorted(values) != list(range(len(values))):
        shutil.rmtree(out)
        raise ConversionError(f"{mask_dirs[0].parent}: mask values {sorted(values)} are not consecutive 0..K-1 "
                              "(e.g. 0/255 masks). Pass --foreground_threshold T to binarise them.")
    for r in raters:
        (out / "labelsTr" / r).mkdir(exist_ok=True)
    channel_names = ({"0": "R", "1": "G", "2": "B"} if num_channels == 3 and ending in (".png", ".tif", ".tiff", ".bmp")
                     else {str(i): "image" for i in range(num_channels)})
    labels = {"background": 0, **{f"class{v}" if len(values) > 2 else "foreground": v for v in sorted(values) if v > 0}}
    write_dataset_json(out, DatasetDescription(
        name=name, channel_names=channel_names, labels=labels, raters=raters, num_training=len(images),
        file_ending=ending, description=f"Converted from {Path(images_dir).name} with diffoseg_convert_folder.",
    ))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert a folder of images and one mask folder per rater to a raw dataset.")
    p.add_argument("-i", "--images", required=True, help="folder with the images")
    p.add_argument("-m", "--masks", required=True, nargs="+", help="one mask folder per rater (matched by file stem)")
    p.add_argument("-d", "--dataset_id", type=int, required=True, help="dataset id (0-999)")
    p.add_argument("-n", "--name", required=True, help="dataset name")
    p.add_argument("--rater_names", nargs="+", default=None, help="one name per mask folder (default: folder names)")
    p.add_argument("--foreground_threshold", type=float, default=None,
                   help="binarise masks: foreground = mask > T (default: mask values are class labels)")
    p.add_argument("--invert", action="store_true", help="foreground = mask < T (dark objects); T defaults to 128")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder of the same name")
    a = p.parse_args(argv)
    return run_cli(lambda: convert_folder(a.images, a.masks, a.dataset_id, a.name, a.rater_names,
                                          a.foreground_threshold, a.invert, a.overwrite))


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_convert_folder", main))
