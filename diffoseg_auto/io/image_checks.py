"""Content checks every image read passes: a complete compressed stream and finite values.

SimpleITK pads a truncated .nii.gz with zeros and reads NaN/Inf as they are; both would flow on
silently into fingerprints, training and predictions. These checks name the file instead.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from diffoseg_auto.errors import UserError
from diffoseg_auto.io.image_errors import ImageReadError

_CHUNK = 1 << 22


class CorruptImageError(ImageReadError, UserError):
    """A compressed image whose stream is truncated or damaged."""


class NonFiniteImageError(ImageReadError, UserError):
    """An image with NaN or Inf voxels."""


def check_compressed_stream(path: str | Path) -> None:
    """Decompress a .gz file to its end: raises CorruptImageError when it is truncated or its CRC fails."""
    path = Path(path)
    if not path.name.lower().endswith(".gz"):
        return
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(_CHUNK):
                pass
    except (EOFError, OSError, zlib.error) as e:
        raise CorruptImageError(f"{path}: cannot read this file, its compressed stream is truncated or corrupt ({e}); "
                                "an interrupted copy? Copy or export it again.") from None


def check_finite(array: np.ndarray, path: str | Path) -> None:
    """Raise NonFiniteImageError naming ``path`` when ``array`` holds NaN or Inf."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        n = int((~np.isfinite(array)).sum())
        raise NonFiniteImageError(f"{path}: contains {n} NaN/Inf value(s). Replace them (e.g. by the minimum intensity) "
                                  "and run again.")
