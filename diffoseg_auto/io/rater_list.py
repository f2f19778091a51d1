"""The one reader of a fold's rater list ``fold_N/raters.json`` (written by diffoseg_add_rater; read by a second
diffoseg_add_rater and by prediction), checked for shape so both report a broken file the same way."""
from __future__ import annotations

from pathlib import Path

from diffoseg_auto.errors import CorruptFileError
from diffoseg_auto.utilities.file_ops import load_json

_FIX = ("Restore it, or delete it (prediction then uses the original raters) and add the expert again "
        "with diffoseg_add_rater.")


def load_rater_list(path: str | Path) -> dict:
    """{"raters": [name, ...], "checkpoint": file name in stage2/, "added": [record, ...]}, checked."""
    path = Path(path)
    listing = load_json(path, fix=_FIX)
    ok = (isinstance(listing, dict) and isinstance(listing.get("checkpoint"), str)
          and isinstance(listing.get("raters"), list) and all(isinstance(r, str) for r in listing["raters"])
          and isinstance(listing.get("added", []), list))
    if not ok:
        raise CorruptFileError(f"{path}: not a rater list written by diffoseg_add_rater (a JSON object with 'raters', "
                               f"'checkpoint' and 'added'). {_FIX}")
    return listing
