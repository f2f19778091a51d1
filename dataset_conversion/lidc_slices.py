"""The LIDC-IDRI slices layout (e.g. the public ``LIDC-IDRI-slices/`` folder of periclesanfe/Pulmoseg).

Layout: ``<root>/LIDC-IDRI-XXXX/nodule-N/images/slice-K.png`` and ``mask-0..3/slice-K.png`` (8-bit gray
128x128 crops, masks 0/255). Every slice has 4 mask files; an all-zero mask means that reader did not
mark the slice, which is an annotation (an empty mask), never a missing rater. The 4 slots are not the
same four persons across patients, so per-rater style is not defined on this set ("virtual raters").

The test split is by patient: LIDC patients whose number is a multiple of 5 (LIDC-IDRI-0005, -0010, ...)
go to imagesTs/labelsTs and are never used for training, tuning or any decision
(documentation/dataset_format.md, "LIDC slices").
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dataset_conversion.conversion_utils import ConversionError, require_dir

NUM_SLOTS = 4
TEST_PATIENT_DIVISOR = 5
_PATIENT = re.compile(r"^LIDC-IDRI-(\d{4})$")
_NODULE = re.compile(r"^nodule-(\d+)$")
_SLICE = re.compile(r"^slice-(\d+)\.png$")


@dataclass(frozen=True)
class LidcSlice:
    """One crop: its image file and the 4 readers' mask files."""
    patient: str
    nodule: int
    index: int
    image: Path
    masks: tuple[Path, ...]

    @property
    def case(self) -> str:
        return f"{self.patient}_nodule{self.nodule}_slice{self.index}"


def patient_number(patient: str) -> int:
    m = _PATIENT.match(patient)
    if m is None:
        raise ConversionError(f"{patient}: not an LIDC patient folder name (expected LIDC-IDRI-XXXX).")
    return int(m.group(1))


def is_test_patient(patient: str) -> bool:
    """The held-out test rule of the full LIDC: the patient's number is a multiple of 5."""
    return patient_number(patient) % TEST_PATIENT_DIVISOR == 0


def is_slices_layout(path: str | Path) -> bool:
    """A folder holding LIDC-IDRI-XXXX patient folders."""
    path = Path(path)
    return path.is_dir() and any(_PATIENT.match(p.name) for p in path.iterdir() if p.is_dir())


def list_lidc_slices(root: str | Path, max_patients: int | None = None) -> list[LidcSlice]:
    """Every slice below ``root`` in (patient, nodule, slice) order; checks that all 4 masks exist.

    ``max_patients``: the first N patients by number (a smaller, patient-complete subset).
    """
    root = require_dir(root, "LIDC slices")
    patients = sorted((p for p in root.iterdir() if p.is_dir() and _PATIENT.match(p.name)), key=lambda p: p.name)
    if not patients:
        raise ConversionError(f"{root}: no LIDC-IDRI-XXXX patient folders. Give the LIDC-IDRI-slices folder with -i.")
    if max_patients is not None:
        patients = patients[:max_patients]
    out: list[LidcSlice] = []
    for p in patients:
        nodules = sorted(((int(m.group(1)), n) for n in p.iterdir() if (m := _NODULE.match(n.name))), key=lambda t: t[0])
        for num, n in nodules:
            images = n / "images"
            slices = sorted(((int(m.group(1)), f) for f in images.glob("slice-*.png") if (m := _SLICE.match(f.name))),
                            key=lambda t: t[0]) if images.is_dir() else []
            if not slices:
                raise ConversionError(f"{images}: no slice-K.png images. Each nodule folder needs images/ and mask-0..3/.")
            for k, img in slices:
                masks = tuple(n / f"mask-{r}" / img.name for r in range(NUM_SLOTS))
                missing = [str(m) for m in masks if not m.is_file()]
                if missing:
                    raise ConversionError(f"{missing[0]}: mask file missing; every slice needs mask-0..3/{img.name} "
                                          "(an unmarked slice is an all-zero mask).")
                out.append(LidcSlice(p.name, num, k, img, masks))
    return out
