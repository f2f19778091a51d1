"""LIDC-IDRI 128x128 lung nodule crops with 4 raters -> raw dataset (default name LIDC).

Input, one of
- the slices layout ``LIDC-IDRI-XXXX/nodule-N/images/slice-K.png`` + ``mask-0..3/slice-K.png`` (the full
  LIDC, 875 patients, 15,548 crops; dataset_conversion/lidc_slices.py): 8-bit PNG images copied bit-exact,
  masks written 0/1; patients whose number is a multiple of 5 go to imagesTs/labelsTs (``--no_test_split``:
  all to imagesTr); ``--max_patients N``: the first N patients only;
- the Probabilistic U-Net pickle ``data_lidc.pickle``: dict key -> {'image', 'masks' (4 masks),
  'series_uid', ...}; pydicom value types inside are replaced by plain str/float/list stand-ins,
  so pydicom need not be installed;
- an ``.npz`` with ``images`` (N,128,128), ``masks`` (N,4,128,128), ``keys``, ``series_uid``
  (e.g. ../shared/data/lidc_subset/lidc_subset.npz).

Output (pickle/npz): 2D .nii.gz, spacing 1 (the crops are already resampled patches), raters rater0..rater3.
An all-zero mask IS an annotation (that reader saw no nodule) and is written as an empty
mask file, never dropped. Case name = the sanitised pickle key; case_groups = the scan id
(key part before '_slice'), else the series UID, so all crops of one scan share a fold.
``--order_raters_by_area``: per image, masks sorted by area ascending (as D-Persona does);
then rater k is "the k-th smallest annotation", not one person.
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import sys

import shutil

from dataset_conversion.conversion_utils import (
    ConversionError, add_target_arguments, binarize, prepare_target_folder, read_mask_gray, run_cli,
    sanitize_case_name, write_image_array, write_label_array,
)
from dataset_conversion.lidc_slices import NUM_SLOTS, is_slices_layout, is_test_patient, list_lidc_slices
from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
from diffoseg_auto.io.image_io import read_image_file
from diffoseg_auto.utilities.command_runner import run_command

NUM_RATERS = NUM_SLOTS
RATERS = [f"rater{k}" for k in range(NUM_RATERS)]


class _UID(str):
    pass


class _DSfloat(float):
    pass


class _MultiValue(list):
    def __setstate__(self, state: dict) -> None:
        self.extend(state.get("_list", []))


class _LidcUnpickler(pickle.Unpickler):
    """Resolve the pydicom classes in the pickle to stand-ins (no pydicom needed)."""

    _STAND_INS = {"UID": _UID, "DSfloat": _DSfloat, "MultiValue": _MultiValue, "IS": int, "PersonName": _UID}

    def find_class(self, module: str, name: str):
        if module.startswith("pydicom"):
            return self._STAND_INS.get(name, _UID)
        return super().find_class(module, name)


def load_lidc(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """keys, images (N,Y,X) float32, masks (N,4,Y,X) uint8, series_uids; rows sorted by key."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: LIDC input file does not exist. Give the pickle or the .npz with -i.")
    if path.suffix == ".npz":
        z = np.load(path, allow_pickle=False)
        missing = [k for k in ("images", "masks", "keys", "series_uid") if k not in z.files]
        if missing:
            raise ConversionError(f"{path}: arrays {missing} missing; expected images, masks, keys, series_uid.")
        keys, images, masks, uids = [str(k) for k in z["keys"]], z["images"], z["masks"], [str(u) for u in z["series_uid"]]
    else:
        try:
            with open(path, "rb") as f:
                data = _LidcUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError) as e:
            raise ConversionError(f"{path}: not a readable LIDC pickle ({e}).") from None
        if not isinstance(data, dict):
            raise ConversionError(f"{path}: expected a dict key -> {{'image', 'masks', 'series_uid'}}.")
        keys = sorted(data)
        try:
            images = np.stack([np.asarray(data[k]["image"], np.float32) for k in keys])
            masks = np.stack([np.stack([np.asarray(m) for m in data[k]["masks"]]) for k in keys])
            uids = [str(data[k].get("series_uid", "")) for k in keys]
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionError(f"{path}: entries must hold 'image' and 4 equally sized 'masks' ({e}).") from None
    if masks.ndim != 4 or masks.shape[1] != NUM_RATERS or masks.shape[0] != images.shape[0]:
        raise ConversionError(f"{path}: masks must be (N, 4, Y, X) matching images (N, Y, X); got {masks.shape} "
                              f"and {images.shape}.")
    return keys, images.astype(np.float32, copy=False), (masks > 0).astype(np.uint8), uids


def order_by_area(masks: np.ndarray) -> np.ndarray:
    """(N, R, *S) -> per image, raters sorted by foreground area ascending (stable)."""
    areas = masks.reshape(masks.shape[0], masks.shape[1], -1).sum(-1)
    order = np.argsort(areas, axis=1, kind="stable")
    return np.take_along_axis(masks, order.reshape(*order.shape, *([1] * (masks.ndim - 2))), axis=1)


def _group_of(key: str, uid: str) -> str:
    return key.split("_slice")[0] if "_slice" in key else (uid or key)


def convert_lidc(input_path: str | Path, dataset_id: int, name: str = "LIDC", order_raters_by_area: bool = False,
                 overwrite: bool = False, test_split: bool = True, max_patients: int | None = None) -> Path:
    """Write $diffoseg_raw/DatasetXXX_<name> from the slices folder, the LIDC pickle or the npz; returns the folder.

    ``test_split`` and ``max_patients`` apply to the slices layout (the pickle and npz carry no test split).
    """
    if is_slices_layout(input_path):
        return _convert_slices(Path(input_path), dataset_id, name, order_raters_by_area, overwrite, test_split,
                               max_patients)
    keys, images, masks, uids = load_lidc(input_path)
    if order_raters_by_area:
        masks = order_by_area(masks)
    cases = [sanitize_case_name(k) for k in keys]
    if len(set(cases)) != len(cases):
        raise ConversionError(f"{input_path}: keys are not unique after sanitising to file names.")
    out = prepare_target_folder(dataset_id, name, overwrite)
    for i, case in enumerate(cases):
        write_image_array(images[i], out / "imagesTr" / f"{case}_0000.nii.gz")
        for k, r in enumerate(RATERS):
            write_label_array(masks[i, k], out / "labelsTr" / r / f"{case}.nii.gz")
    write_dataset_json(out, DatasetDescription(
        name=name, channel_names={"0": "CT"}, labels={"background": 0, "nodule": 1}, raters=RATERS,
        num_training=len(cases), file_ending=".nii.gz",
        case_groups={c: _group_of(k, u) for c, k, u in zip(cases, keys, uids)},
        description="LIDC-IDRI 128x128 crops (Probabilistic U-Net release), 4 raters; an empty mask means the "
                    "reader saw no nodule" + ("; raters ordered by mask area per image" if order_raters_by_area else ""),
        extra={"raters_ordered_by_area": bool(order_raters_by_area)},
    ))
    return out


def _convert_slices(root: Path, dataset_id: int, name: str, order_raters_by_area: bool, overwrite: bool,
                    test_split: bool, max_patients: int | None) -> Path:
    slices = list_lidc_slices(root, max_patients)
    out = prepare_target_folder(dataset_id, name, overwrite)
    groups: dict[str, str] = {}
    num_test = 0
    for s in slices:
        split = "Ts" if test_split and is_test_patient(s.patient) else "Tr"
        image, _ = read_image_file(s.image)
        masks = [binarize(read_mask_gray(m)[0], 127) for m in s.masks]
        if image.shape[0] != 1:
            raise ConversionError(f"{s.image}: expected one gray channel, found {image.shape[0]}.")
        bad = [m for m, a in zip(s.masks, masks) if a.shape != image.shape[1:]]
        if bad:
            raise ConversionError(f"{bad[0]}: mask size differs from its image {s.image} {list(image.shape[1:])}.")
        masks = np.stack(masks)
        if order_raters_by_area:
            masks = order_by_area(masks[None])[0]
        (out / f"images{split}").mkdir(exist_ok=True)
        shutil.copyfile(s.image, out / f"images{split}" / f"{s.case}_0000.png")  # 8-bit gray PNG: keep it bit-exact
        for k, r in enumerate(RATERS):
            write_label_array(masks[k], out / f"labels{split}" / r / f"{s.case}.png")
        if split == "Tr":
            groups[s.case] = s.patient
        else:
            num_test += 1
    for split in ("Tr", "Ts") if num_test else ("Tr",):
        for r in RATERS:
            (out / f"labels{split}" / r).mkdir(parents=True, exist_ok=True)
    write_dataset_json(out, DatasetDescription(
        name=name, channel_names={"0": "CT"}, labels={"background": 0, "nodule": 1}, raters=RATERS,
        num_training=len(groups), file_ending=".png", case_groups=groups,
        description="LIDC-IDRI 128x128 crops (slices layout), 4 reader slots per crop (not the same persons across "
                    "patients); an empty mask means the reader did not mark the slice"
                    + ("; raters ordered by mask area per image" if order_raters_by_area else ""),
        extra={"raters_ordered_by_area": bool(order_raters_by_area), "raters_are_slots": True, "numTest": num_test,
               "test_split": ("patients whose LIDC number is a multiple of 5 (imagesTs/labelsTs)"
                              if test_split else "none")},
    ))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert the LIDC crops (Probabilistic U-Net pickle or .npz) to a raw dataset.")
    p.add_argument("-i", "--input", required=True,
                   help="the LIDC-IDRI-slices folder, data_lidc.pickle or an .npz with images/masks/keys/series_uid")
    add_target_arguments(p, "LIDC")
    p.add_argument("--order_raters_by_area", action="store_true",
                   help="per image, sort the 4 masks by area ascending (D-Persona protocol)")
    p.add_argument("--no_test_split", action="store_true",
                   help="slices layout: put every patient into imagesTr (default: patients whose number is a "
                        "multiple of 5 go to imagesTs/labelsTs, never trained or tuned on)")
    p.add_argument("--max_patients", type=int, default=None,
                   help="slices layout: convert only the first N patients (a patient-complete subset)")
    a = p.parse_args(argv)
    return run_cli(lambda: convert_lidc(a.input, a.dataset_id, a.name, a.order_raters_by_area, a.overwrite,
                                        test_split=not a.no_test_split, max_patients=a.max_patients))


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_convert_lidc", main))
