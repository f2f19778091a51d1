"""BU-BIL (phase-contrast cells, 5 experts x 2 tools = 10 masks per image) -> raw dataset.

Input, either
- one set's folder, e.g. ``BU-BIL_Dataset1`` (``RawImages/Bxx.png``, ``ExpertsAnnotations/PersonN_{Amira,ImageJ}/seg_Bxx.png``);
- the folder holding the sets (e.g. ``DataSet/Rabbit/`` of tobastin/CS760-Project-Lungs): datasets 1, 2A and 3
  (``--sets``) go into ONE dataset. Set 2A's masks are in ``BU-BIL_Dataset2/ExpertsAnnotations/2A/``; its images
  are the 34 of ``BU-BIL_Dataset2/RawImages`` that 2A annotated. Set 3's images are 16-bit.

``seg_``/``Seg_`` are matched case-insensitively; masks stored as RGB are read as gray. The cell is BLACK in
every mask: foreground = mask < 128. Raters are the annotation folders (``Person1_Amira`` ... ``Person5_ImageJ``,
the same 5 persons x 2 tools in every set). A rater folder without a mask for an image means that rater did not
annotate it (no file).

Output: .png images, one gray channel (8-bit gray PNGs and set 3's 16-bit PNGs copied bit-exact; RGB or palette
images written as their gray mean) and .png labels (uint8 0/1). With several sets, case names carry the set
(``d1_B01``, ``d2A_P01``, ``d3_m01``), ``dataset.json["case_sources"]`` records each case's set and
``case_groups`` its source image (each image is its own group: folds are grouped by source image).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset_conversion.conversion_utils import (
    ConversionError, add_target_arguments, binarize, prepare_target_folder, read_mask_gray, require_dir, run_cli,
    write_image_array, write_label_array,
)
from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
from diffoseg_auto.io.image_io import read_image_file
from diffoseg_auto.utilities.command_runner import run_command

FOREGROUND_BELOW = 128
# set name -> (images folder, annotations folder), relative to the folder holding the sets
SETS = {
    "1": ("BU-BIL_Dataset1/RawImages", "BU-BIL_Dataset1/ExpertsAnnotations"),
    "2A": ("BU-BIL_Dataset2/RawImages", "BU-BIL_Dataset2/ExpertsAnnotations/2A"),
    "3": ("BU-BIL_Dataset3/RawImages", "BU-BIL_Dataset3/ExpertsAnnotations"),
}
DEFAULT_SETS = ("1", "2A", "3")


@dataclass(frozen=True)
class BubilSet:
    """One expert-annotated set: its images, its rater folders and the prefix of its case names."""
    name: str
    images: Path
    annotations: Path
    prefix: str

    def rater_masks(self) -> dict[str, dict[str, Path]]:
        """rater -> lower-case image stem -> mask file ('seg_B01.png' and 'Seg_B01.png' both map to 'b01')."""
        raters = sorted(p.name for p in self.annotations.iterdir() if p.is_dir())
        return {r: {p.name.lower().removeprefix("seg_")[:-4]: p for p in (self.annotations / r).iterdir()
                    if p.name.lower().endswith(".png")} for r in raters}

    def annotated_images(self, masks: dict[str, dict[str, Path]]) -> list[Path]:
        """The set's images that at least one rater annotated (set 2's RawImages also hold 2B's images)."""
        stems = set().union(*(m.keys() for m in masks.values())) if masks else set()
        return sorted(p for p in self.images.glob("*.png") if p.stem.lower() in stems)


def find_sets(input_folder: str | Path, sets: tuple[str, ...] = DEFAULT_SETS) -> list[BubilSet]:
    """The sets to convert: ``input_folder`` is one set's folder, or the folder holding BU-BIL_DatasetN/."""
    root = require_dir(input_folder, "BU-BIL dataset")
    if (root / "RawImages").is_dir():  # one set's folder: no prefix, case names as in the source
        return [BubilSet(root.name, require_dir(root / "RawImages", "BU-BIL RawImages"),
                         require_dir(root / "ExpertsAnnotations", "BU-BIL ExpertsAnnotations"), "")]
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise ConversionError(f"--sets {unknown}: unknown BU-BIL expert set(s); choose from {sorted(SETS)}.")
    return [BubilSet(s, require_dir(root / SETS[s][0], f"BU-BIL set {s} images"),
                     require_dir(root / SETS[s][1], f"BU-BIL set {s} annotations"), f"d{s}_") for s in sets]


def _write_gray_image(img: Path, target: Path) -> list[int]:
    """Copy a one-channel PNG bit-exact (8 or 16 bit); write RGB/palette images as their gray mean. Returns the shape."""
    arr, props = read_image_file(img)
    if arr.shape[0] == 1:
        shutil.copyfile(img, target)
    else:  # e.g. dataset 1's B02 (RGB with equal components), dataset 2's palette images
        write_image_array(np.round(arr.mean(0)).astype(np.uint8), target)
    return props["shape"]


def convert_bubil(input_folder: str | Path, dataset_id: int, name: str = "BUBIL", overwrite: bool = False,
                  sets: tuple[str, ...] = DEFAULT_SETS) -> Path:
    """Write $diffoseg_raw/DatasetXXX_<name> from one BU-BIL set or several; returns the folder."""
    found = find_sets(input_folder, tuple(sets))
    per_set = [(s, s.rater_masks()) for s in found]
    raters = sorted(per_set[0][1])  # every set must have the first set's rater folders
    for s, masks in per_set:
        if not masks or not s.annotated_images(masks):
            raise ConversionError(f"{s.annotations}: expected <rater>/seg_*.png folders matching {s.images}/*.png.")
        if sorted(masks) != raters:
            raise ConversionError(f"{s.annotations}: raters {sorted(masks)} differ from {found[0].annotations}'s {raters}; "
                                  "convert the sets separately with --sets.")
    out = prepare_target_folder(dataset_id, name, overwrite)
    sources: dict[str, str] = {}
    for s, masks in per_set:
        for img in s.annotated_images(masks):
            case = f"{s.prefix}{img.stem}"
            shape = _write_gray_image(img, out / "imagesTr" / f"{case}_0000.png")
            for r in raters:
                m = masks[r].get(img.stem.lower())
                if m is None:
                    continue
                gray, _ = read_mask_gray(m)
                if list(gray.shape) != shape:
                    raise ConversionError(f"{m}: mask size {list(gray.shape)} differs from image {img} {shape}.")
                write_label_array(binarize(gray, FOREGROUND_BELOW, invert=True), out / "labelsTr" / r / f"{case}.png")
            sources[case] = s.name
    for r in raters:
        (out / "labelsTr" / r).mkdir(exist_ok=True)
    several = len(found) > 1
    write_dataset_json(out, DatasetDescription(
        name=name, channel_names={"0": "phase_contrast"}, labels={"background": 0, "cell": 1}, raters=raters,
        num_training=len(sources), file_ending=".png",
        case_groups={c: c for c in sources} if several else None,
        description=f"BU-BIL expert set(s) {', '.join(s.name for s in found)} (Gurari et al., WACV 2015): 5 experts "
                    "x 2 tools; foreground = mask < 128.",
        extra={"case_sources": sources} if several else {},
    ))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert BU-BIL expert sets (10 masks per image) to a raw dataset.")
    p.add_argument("-i", "--input", required=True,
                   help="one set's folder (BU-BIL_Dataset1: RawImages/, ExpertsAnnotations/) or the folder holding "
                        "BU-BIL_Dataset1/2/3 (then --sets are combined into one dataset)")
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), choices=sorted(SETS),
                   help="with the folder holding the sets: which expert sets to combine (default: 1 2A 3)")
    add_target_arguments(p, "BUBIL")
    a = p.parse_args(argv)
    return run_cli(lambda: convert_bubil(a.input, a.dataset_id, a.name, a.overwrite, tuple(a.sets)))


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_convert_bubil", main))
