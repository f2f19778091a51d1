"""NPC-170 / MMIS-2024 Task 1 (nasopharyngeal carcinoma, 3 MR sequences, 4 raters) -> raw dataset.

Input folder layout (h5 files with datasets ``t1``, ``t1c``, ``t2`` and ``label_a1``..``label_a4``):

    <input>/training_2d/<patient>_<slice>.h5   one 2D slice (Y, X) per file
    <input>/validation/<patient>.h5            one 3D volume (Z, Y, X) per file

Decisions (documentation/dataset_format.md):
- every case becomes a 3D volume: validation volumes are used as they are; training slices are
  stacked per patient along Z, sorted by the integer slice index after the last '_' (gaps in
  the index are not filled: the slices are stacked in order);
- channels 0000/0001/0002 = T1/T1C/T2; raters rater_a1..rater_a4; labels binarised (> 0 = tumour);
- a ``label_aK`` missing in a file (or, for stacked slices, in any slice of the patient) means
  rater K did not annotate that case: no label file is written;
- spacing is not stored in the h5 files: ``--spacing Z Y X`` (default 1 1 1);
- case names: ``<patient>`` (training) and ``<patient>`` of the validation file; a patient in both
  splits is an error. case_groups map each case to its patient.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import h5py
import numpy as np
import sys

from dataset_conversion.conversion_utils import (
    ConversionError, add_target_arguments, prepare_target_folder, require_dir, run_cli, sanitize_case_name,
    write_image_array, write_label_array,
)
from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
from diffoseg_auto.utilities.command_runner import run_command

SEQUENCES = ("t1", "t1c", "t2")
RATER_KEYS = ("label_a1", "label_a2", "label_a3", "label_a4")
RATERS = [f"rater_{k.split('_')[1]}" for k in RATER_KEYS]
_SLICE_RE = re.compile(r"^(?P<patient>.+)_(?P<slice>\d+)\.h5$")


def _read_h5(path: Path) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """(3, *S) float32 image and per-rater label (None when that rater's dataset is absent)."""
    try:
        with h5py.File(path, "r") as f:
            missing = [s for s in SEQUENCES if s not in f]
            if missing:
                raise ConversionError(f"{path}: dataset(s) {missing} missing; NPC-170 files need {list(SEQUENCES)}.")
            image = np.stack([np.asarray(f[s], np.float32) for s in SEQUENCES])
            labels = [(np.asarray(f[k]) > 0).astype(np.uint8) if k in f else None for k in RATER_KEYS]
    except OSError as e:
        raise ConversionError(f"{path}: not a readable h5 file ({e}).") from None
    for k, lab in zip(RATER_KEYS, labels):
        if lab is not None and lab.shape != image.shape[1:]:
            raise ConversionError(f"{path}: {k} has shape {lab.shape} but the images {image.shape[1:]}.")
    return image, labels


def _stack_slices(files: list[tuple[int, Path]]) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Slices sorted by index -> (3, Z, Y, X) and per-rater (Z, Y, X) or None."""
    images, labels = [], []
    for _, f in sorted(files):
        im, lab = _read_h5(f)
        if im.ndim != 3:
            raise ConversionError(f"{f}: training_2d files must hold 2D slices, got image shape {im.shape[1:]}.")
        if images and im.shape != images[0].shape:
            raise ConversionError(f"{f}: slice shape {im.shape[1:]} differs from the patient's other slices "
                                  f"{images[0].shape[1:]}.")
        images.append(im)
        labels.append(lab)
    per_rater = []
    for k in range(len(RATER_KEYS)):
        ks = [lab[k] for lab in labels]
        per_rater.append(None if any(x is None for x in ks) else np.stack(ks))
    return np.stack(images, 1), per_rater


def collect_npc_cases(input_folder: Path) -> dict[str, list[tuple[int, Path]] | Path]:
    """Case -> sorted slice files (training_2d) or one volume file (validation)."""
    input_folder = require_dir(input_folder, "NPC-170 input")
    train, val = input_folder / "training_2d", input_folder / "validation"
    if not train.is_dir() and not val.is_dir():
        raise ConversionError(f"{input_folder}: neither training_2d/ nor validation/ found. Point -i at the MMIS-2024 "
                              "Task 1 folder.")
    cases: dict[str, list[tuple[int, Path]] | Path] = {}
    if train.is_dir():
        for f in sorted(train.glob("*.h5")):
            m = _SLICE_RE.match(f.name)
            if m is None:
                raise ConversionError(f"{f}: training_2d files must be named <patient>_<slice>.h5.")
            slices = cases.setdefault(sanitize_case_name(m.group("patient")), [])
            idx = int(m.group("slice"))
            if any(i == idx for i, _ in slices):
                raise ConversionError(f"{f}: slice index {idx} appears twice for patient {m.group('patient')}.")
            slices.append((idx, f))
    if val.is_dir():
        for f in sorted(val.glob("*.h5")):
            case = sanitize_case_name(f.name[:-3])
            if case in cases:
                raise ConversionError(f"{f}: patient '{case}' also occurs in training_2d/. Each patient must be in "
                                      "one split only.")
            cases[case] = f
    if not cases:
        raise ConversionError(f"{input_folder}: no .h5 files found in training_2d/ or validation/.")
    return cases


def convert_npc170(input_folder: str | Path, dataset_id: int, name: str = "NPC170",
                   spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), overwrite: bool = False) -> Path:
    """Write $diffoseg_raw/DatasetXXX_<name> from the NPC-170 h5 files; returns the folder."""
    cases = collect_npc_cases(Path(input_folder))
    out = prepare_target_folder(dataset_id, name, overwrite)
    for case, src in cases.items():
        if isinstance(src, Path):
            image, labels = _read_h5(src)
            if image.ndim != 4:
                raise ConversionError(f"{src}: validation files must hold 3D volumes, got shape {image.shape[1:]}.")
        else:
            image, labels = _stack_slices(src)
        if all(lab is None for lab in labels):
            raise ConversionError(f"{src}: no label_a1..label_a4 dataset: the case has no annotation at all.")
        for c in range(image.shape[0]):
            write_image_array(image[c], out / "imagesTr" / f"{case}_{c:04d}.nii.gz", spacing)
        for r, lab in zip(RATERS, labels):
            if lab is not None:
                write_label_array(lab, out / "labelsTr" / r / f"{case}.nii.gz", spacing)
    for r in RATERS:
        (out / "labelsTr" / r).mkdir(exist_ok=True)
    write_dataset_json(out, DatasetDescription(
        name=name, channel_names={"0": "T1", "1": "T1C", "2": "T2"}, labels={"background": 0, "tumor": 1},
        raters=RATERS, num_training=len(cases), file_ending=".nii.gz", case_groups={c: c for c in cases},
        description="NPC-170 / MMIS-2024 Task 1: 2D training slices stacked per patient, validation volumes as is.",
    ))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert NPC-170 (MMIS-2024 Task 1) h5 files to a raw 3D dataset.")
    p.add_argument("-i", "--input", required=True, help="folder with training_2d/ and/or validation/")
    add_target_arguments(p, "NPC170")
    p.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("Z", "Y", "X"),
                   help="voxel spacing to store (the h5 files carry none); default 1 1 1")
    a = p.parse_args(argv)
    return run_cli(lambda: convert_npc170(a.input, a.dataset_id, a.name, tuple(a.spacing), a.overwrite))


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_convert_npc170", main))
