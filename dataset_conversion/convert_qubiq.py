"""QUBIQ (Quantification of Uncertainties in Biomedical Image Quantification) -> raw dataset.

Input: ``<input>/caseNN/image.nii.gz`` and ``<input>/caseNN/task<TT>_seg<RR>.nii.gz`` (one file per
rater RR). Only ``--task`` (default 01) is converted; the dataset is named ``QUBIQ_<name>``.

Decisions: raters are the union of the RR found (rater names ``seg01``, ``seg02``, ...); a case
without ``task<TT>_seg<RR>`` has no label file for that rater (missing annotation). Labels are
binarised (> 0.5; some releases store 0/1 as float) and written in the image's geometry (their
size must match). A multi-component image becomes one channel file per component.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from dataset_conversion.conversion_utils import (
    ConversionError, binarize, prepare_target_folder, read_mask_gray, require_dir, run_cli,
    sanitize_case_name,
)
from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
from diffoseg_auto.io.image_io import read_image_file, write_image, write_seg
from diffoseg_auto.utilities.command_runner import run_command


def convert_qubiq(input_folder: str | Path, dataset_id: int, name: str, task: str = "01", overwrite: bool = False) -> Path:
    """Write $diffoseg_raw/DatasetXXX_QUBIQ_<name> from QUBIQ case folders; returns the folder."""
    root = require_dir(input_folder, "QUBIQ input")
    task = f"{int(task):02d}" if str(task).isdigit() else str(task)
    seg_re = re.compile(rf"^task{re.escape(task)}_seg(\d+)\.nii(\.gz)?$", re.IGNORECASE)
    case_dirs = sorted(p for p in root.iterdir() if p.is_dir() and (p / "image.nii.gz").is_file())
    if not case_dirs:
        raise ConversionError(f"{root}: no <case>/image.nii.gz found. Point -i at a QUBIQ Training folder.")
    segs = {c.name: {int(m.group(1)): f for f in c.iterdir() if (m := seg_re.match(f.name))} for c in case_dirs}
    rater_ids = sorted({r for s in segs.values() for r in s})
    if not rater_ids:
        raise ConversionError(f"{root}: no task{task}_segNN.nii.gz files. Check --task.")
    raters = [f"seg{r:02d}" for r in rater_ids]
    out = prepare_target_folder(dataset_id, f"QUBIQ_{name}", overwrite)
    num_channels = None
    for c in case_dirs:
        case = sanitize_case_name(c.name)
        if not segs[c.name]:
            raise ConversionError(f"{c}: no task{task}_segNN.nii.gz: the case has no annotation. Remove it or check --task.")
        image, props = read_image_file(c / "image.nii.gz")
        if num_channels not in (None, image.shape[0]):
            raise ConversionError(f"{c / 'image.nii.gz'}: {image.shape[0]} component(s), other cases have {num_channels}.")
        num_channels = image.shape[0]
        for ch in range(image.shape[0]):
            write_image(image[ch], props, out / "imagesTr" / f"{case}_{ch:04d}.nii.gz")
        for r, f in segs[c.name].items():
            mask, mprops = read_mask_gray(f)
            if list(mask.shape) != props["shape"]:
                raise ConversionError(f"{f}: size {list(mask.shape)} differs from {c / 'image.nii.gz'} {props['shape']}.")
            write_seg(binarize(mask, 0.5), props, out / "labelsTr" / f"seg{r:02d}" / f"{case}.nii.gz")
    for r in raters:
        (out / "labelsTr" / r).mkdir(exist_ok=True)
    write_dataset_json(out, DatasetDescription(
        name=f"QUBIQ_{name}", channel_names={str(i): "image" for i in range(num_channels)},
        labels={"background": 0, f"task{task}": 1}, raters=raters, num_training=len(case_dirs), file_ending=".nii.gz",
        description=f"QUBIQ {name}, task {task}.",
    ))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert one QUBIQ sub-dataset/task to a raw dataset DatasetXXX_QUBIQ_<name>.")
    p.add_argument("-i", "--input", required=True, help="folder with caseNN/image.nii.gz and caseNN/taskTT_segRR.nii.gz")
    p.add_argument("-d", "--dataset_id", type=int, required=True, help="dataset id (0-999)")
    p.add_argument("-n", "--name", required=True, help="sub-dataset name, e.g. prostate (dataset becomes QUBIQ_<name>)")
    p.add_argument("--task", default="01", help="task number to convert (default 01)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder of the same name")
    a = p.parse_args(argv)
    return run_cli(lambda: convert_qubiq(a.input, a.dataset_id, a.name, a.task, a.overwrite))


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_convert_qubiq", main))
