"""BU-BIL Dataset 1 (phase-contrast cells, 5 experts x 2 tools = 10 masks per image) -> raw dataset.

Input: ``<input>/RawImages/Bxx.png`` and ``<input>/ExpertsAnnotations/PersonN_{Amira,ImageJ}/seg_Bxx.png``
(``seg_``/``Seg_`` are matched case-insensitively; some masks are stored as RGB and are read
as gray). The cell is BLACK in the masks: foreground = mask < 128.

Output: .png images (uint8 gray; B02.png is stored as RGB with three equal components and is
written as one gray channel so that every case has the single channel of channel_names) and .png labels (uint8 0/1): small files, no geometry to
lose (2D, spacing 1). Raters are the annotation folders sorted by name (Person1_Amira, ...).
A rater folder without a mask for an image means that rater did not annotate it (no file).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import sys

from dataset_conversion.conversion_utils import (
    ConversionError, add_target_arguments, binarize, prepare_target_folder, read_mask_gray, require_dir, run_cli,
    write_image_array, write_label_array,
)
from diffoseg_auto.dataset.raw_dataset import write_dataset_json
from diffoseg_auto.io.image_io import read_image_file
from diffoseg_auto.utilities.command_runner import run_command

FOREGROUND_BELOW = 128


def convert_bubil(input_folder: str | Path, dataset_id: int, name: str = "BUBIL", overwrite: bool = False) -> Path:
    """Write $diffoseg_raw/DatasetXXX_<name> from BU-BIL_Dataset1; returns the folder."""
    root = require_dir(input_folder, "BU-BIL dataset")
    raw = require_dir(root / "RawImages", "BU-BIL RawImages")
    ann = require_dir(root / "ExpertsAnnotations", "BU-BIL ExpertsAnnotations")
    images = sorted(raw.glob("*.png"))
    raters = sorted(p.name for p in ann.iterdir() if p.is_dir())
    if not images or not raters:
        raise ConversionError(f"{root}: expected RawImages/*.png and ExpertsAnnotations/<rater>/ folders.")
    # rater -> lower-case case name -> mask file ('seg_B01.png' and 'Seg_B01.png' both map to 'b01')
    masks = {r: {p.name.lower().removeprefix("seg_")[:-4]: p for p in (ann / r).glob("*") if p.name.lower().endswith(".png")}
             for r in raters}
    out = prepare_target_folder(dataset_id, name, overwrite)
    for img in images:
        case = img.stem
        arr, props = read_image_file(img)
        if arr.shape[0] == 1:
            shutil.copyfile(img, out / "imagesTr" / f"{case}_0000.png")  # already gray uint8 PNG: keep it bit-exact
        else:  # B02 is stored as RGB with three equal components: one gray channel like the others
            write_image_array(np.round(arr.mean(0)).astype(np.uint8), out / "imagesTr" / f"{case}_0000.png")
        for r in raters:
            m = masks[r].get(case.lower())
            if m is None:
                continue
            gray, mprops = read_mask_gray(m)
            if list(gray.shape) != props["shape"]:
                raise ConversionError(f"{m}: mask size {list(gray.shape)} differs from image {img} {props['shape']}.")
            write_label_array(binarize(gray, FOREGROUND_BELOW, invert=True), out / "labelsTr" / r / f"{case}.png")
    for r in raters:
        (out / "labelsTr" / r).mkdir(exist_ok=True)
    write_dataset_json(
        out, name=name, channel_names={"0": "phase_contrast"}, labels={"background": 0, "cell": 1}, raters=raters,
        num_training=len(images), file_ending=".png",
        description="BU-BIL Dataset 1 (Gurari et al., WACV 2015): 5 experts x 2 tools; foreground = mask < 128.",
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert BU-BIL Dataset 1 (10 masks per image) to a raw dataset.")
    p.add_argument("-i", "--input", required=True, help="the BU-BIL_Dataset1 folder (RawImages/, ExpertsAnnotations/)")
    add_target_arguments(p, "BUBIL")
    a = p.parse_args(argv)
    return run_cli(lambda: convert_bubil(a.input, a.dataset_id, a.name, a.overwrite))


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_convert_bubil", main))
