"""The one reader of an evaluation ``summary.json`` (written by diffoseg_evaluate and the trainers' validation;
read by the benchmark, the method comparison's learning curves), checked for shape."""
from __future__ import annotations

from pathlib import Path

from diffoseg_auto.errors import CorruptFileError
from diffoseg_auto.utilities.file_ops import load_json

_FIX = ("Delete it and score the predictions again (diffoseg_train DATASET CONFIGURATION FOLD --val for a "
        "validation summary, diffoseg_evaluate for a prediction folder).")


def load_summary(path: str | Path) -> dict:
    """The summary dict: a JSON object whose 'metrics' is an object of metric -> number (or "n/a")."""
    path = Path(path)
    summary = load_json(path, fix=_FIX)
    if not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
        raise CorruptFileError(f"{path}: not an evaluation summary (a JSON object with 'metrics'). {_FIX}")
    return summary
