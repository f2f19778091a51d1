"""The one reader of ``dataset_fingerprint.json`` (planning reuses it, the planner plans from it, training checks
the preprocessed cases against its case list), so a broken file gives one message naming it everywhere."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from diffoseg_auto.errors import CorruptFileError
from diffoseg_auto.utilities.file_ops import load_json

FINGERPRINT_FILE = "dataset_fingerprint.json"
# what the experiment planner plans from
PLANNING_KEYS = ("spacings", "shapes_after_crop", "foreground_intensity_properties_per_channel")


def load_fingerprint(path: str | Path, required: Sequence[str] = ()) -> dict:
    """The fingerprint dict, checked: a JSON object, ``cases`` a list of names, every ``required`` key present."""
    path = Path(path)
    fix = "Recompute it: diffoseg_extract_fingerprint -d DATASET --clean (or delete it and plan again)."
    fp = load_json(path, fix=fix)
    problem = None
    if not isinstance(fp, dict):
        problem = f"holds a {type(fp).__name__}, not a JSON object"
    elif "cases" in fp and not (isinstance(fp["cases"], list) and all(isinstance(c, str) for c in fp["cases"])):
        problem = "'cases' is not a list of case names"
    elif [k for k in required if k not in fp]:
        problem = f"lacks {[k for k in required if k not in fp]}"
    elif "spacings" in fp and "shapes_after_crop" in fp and not (
            isinstance(fp["spacings"], list) and isinstance(fp["shapes_after_crop"], list)
            and len(fp["spacings"]) == len(fp["shapes_after_crop"])):
        problem = "'spacings' and 'shapes_after_crop' are not lists of one entry per case"
    if problem:
        raise CorruptFileError(f"{path}: not a dataset fingerprint ({problem}). {fix}")
    return fp
