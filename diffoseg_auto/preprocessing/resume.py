"""Preprocessing that resumes after an interruption and training that refuses an incomplete folder.

The output folder of a configuration records which preprocessing settings made its cases
(``preprocessing_signature.json``). A re-run with the same settings preprocesses only the cases
that are missing; other settings make every existing case stale, so those are deleted first.
A case is complete when both its .npz and its .pkl exist (they are written atomically, in
that order, so a kill between them leaves an .npz alone, which is redone).
"""
from __future__ import annotations

import logging
from pathlib import Path

from diffoseg_auto.dataset.fingerprint_file import FINGERPRINT_FILE, load_fingerprint
from diffoseg_auto.errors import UserError
from diffoseg_auto.plans.plans import Plans
from diffoseg_auto.preprocessing.case_storage import list_preprocessed_cases
from diffoseg_auto.utilities.file_ops import load_json, save_json
from diffoseg_auto.utilities.temp_files import remove_stale_temp_files

logger = logging.getLogger(__name__)
SIGNATURE_FILE = "preprocessing_signature.json"
_CASE_SUFFIXES = (".npz", ".pkl", "_data.npy", "_seg.npy", "_rater_mask.npy")


class IncompletePreprocessingError(UserError):
    """The preprocessed folder lacks cases the plans were made from."""


def preprocessing_signature(plans: Plans, configuration: str) -> dict:
    """The plans entries that change the preprocessed arrays (not the network or training settings)."""
    c = plans.get_configuration(configuration)
    return {"spacing": list(c.spacing), "normalization_schemes": list(c.normalization_schemes),
            "use_mask_for_norm": list(c.use_mask_for_norm), "resampling_order_data": c.resampling_order_data,
            "resampling_order_seg": c.resampling_order_seg, "slice_axis": c.slice_axis,
            "num_classes": plans.num_classes, "raters": list(plans.raters),
            "foreground_intensity_properties_per_channel": plans.foreground_intensity_properties_per_channel}


def _case_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.endswith(_CASE_SUFFIXES)]


def prepare_output_folder(folder: str | Path, signature: dict) -> set[str]:
    """Clean leftovers of an interrupted run; returns the cases that need no preprocessing."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(folder, recursive=False)
    sig_file = folder / SIGNATURE_FILE
    recorded = load_json(sig_file) if sig_file.is_file() else None
    if recorded == signature:
        return set(list_preprocessed_cases(folder))
    stale = _case_files(folder)
    if stale:
        logger.warning(f"{folder}: the plans' preprocessing settings changed (or are unknown); {len(stale)} old "
                       "file(s) are deleted and every case is preprocessed again")
    for p in stale:
        p.unlink(missing_ok=True)
    save_json(signature, sig_file)  # before any case: a killed run then resumes with these settings
    return set()


def assert_preprocessing_complete(data_folder: str | Path, dataset_folder: str | Path, dataset_name: str,
                                  configuration: str) -> None:
    """Raise listing the cases of the dataset fingerprint (the cases the plans were made from) that are missing."""
    fp = Path(dataset_folder) / FINGERPRINT_FILE
    if not fp.is_file():
        return
    expected = load_fingerprint(fp).get("cases") or []
    missing = sorted(set(expected) - set(list_preprocessed_cases(data_folder)))
    if missing:
        shown = ", ".join(missing[:20]) + (f", ... ({len(missing) - 20} more)" if len(missing) > 20 else "")
        raise IncompletePreprocessingError(
            f"{data_folder}: {len(missing)} of {len(expected)} case(s) are not preprocessed: {shown}. "
            f"Run `diffoseg_preprocess -d {dataset_name} -c {configuration}` (it finishes the missing cases only).")
