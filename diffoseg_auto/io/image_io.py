"""Image and segmentation I/O through SimpleITK.

Conventions used everywhere in the project:
- arrays are in SimpleITK's numpy order: 2D images (Y, X), 3D images (Z, Y, X);
- images are returned channel-first: (C, Y, X) or (C, Z, Y, X);
- ``props["spacing"]`` is in *array* axis order (reversed from SimpleITK's x, y, z);
  origin and direction are kept exactly as SimpleITK gives them so that outputs can be
  written back in the input's geometry;
- 2D formats without spacing (.png, .tif) get spacing 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from diffoseg_auto.io.image_checks import check_compressed_stream, check_finite
from diffoseg_auto.io.image_errors import ImageReadError
from diffoseg_auto.utilities.file_ops import atomic_write

SUPPORTED_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff", ".bmp")
NATURAL_IMAGE_ENDINGS = (".png", ".tif", ".tiff", ".bmp")


def file_ending_of(path: str | Path) -> str:
    name = str(path).lower()
    for e in sorted(SUPPORTED_FILE_ENDINGS, key=len, reverse=True):
        if name.endswith(e):
            return e
    raise ImageReadError(f"{path}: unsupported file type. Supported endings: {', '.join(SUPPORTED_FILE_ENDINGS)}")


def _read_sitk(path: str | Path) -> sitk.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file does not exist")
    check_compressed_stream(path)  # SimpleITK would pad a truncated file with zeros
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:  # SimpleITK raises RuntimeError with a long C++ message
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown reason"
        raise ImageReadError(f"{path}: SimpleITK cannot read this file ({first}). Is it a valid image? "
                             "Replace it with a readable copy.") from None


def _props(img: sitk.Image) -> dict:
    return {
        "spacing": [float(s) for s in reversed(img.GetSpacing())],
        "origin": [float(o) for o in img.GetOrigin()],
        "direction": [float(d) for d in img.GetDirection()],
        "shape": [int(s) for s in reversed(img.GetSize())],
        "ndim": int(img.GetDimension()),
    }


def read_image_file(path: str | Path) -> tuple[np.ndarray, dict]:
    """One file -> (C, *spatial) float32 and its geometry. RGB/vector images give C > 1."""
    img = _read_sitk(path)
    arr = sitk.GetArrayFromImage(img)
    ncomp = img.GetNumberOfComponentsPerPixel()
    if ncomp > 1:
        arr = np.moveaxis(arr, -1, 0)  # vector components last in numpy -> channel first
    else:
        arr = arr[None]
    return arr.astype(np.float32, copy=False), _props(img)


def read_images(files: Sequence[str | Path]) -> tuple[np.ndarray, dict]:
    """Read the channel files of one case (``_0000``, ``_0001``, ...) into (C, *spatial)."""
    if len(files) == 0:
        raise ImageReadError("read_images: no files given")
    arrays, props = [], None
    for f in files:
        a, p = read_image_file(f)
        if props is not None and list(a.shape[1:]) != props["shape"]:
            raise ImageReadError(
                f"{f}: shape {list(a.shape[1:])} differs from the first channel {files[0]} ({props['shape']}). "
                "All channels of a case must have the same size."
            )
        props = props or p
        check_finite(a, f)
        arrays.append(a)
    props["files"] = [str(f) for f in files]
    return np.concatenate(arrays, 0), props


def read_seg(path: str | Path) -> tuple[np.ndarray, dict]:
    """A label map -> (*spatial) integer array and its geometry."""
    img = _read_sitk(path)
    if img.GetNumberOfComponentsPerPixel() > 1:
        raise ImageReadError(f"{path}: a segmentation must have one component, found {img.GetNumberOfComponentsPerPixel()} (RGB mask?). Save it as a single-channel image.")
    arr = sitk.GetArrayFromImage(img)
    return arr, _props(img)


def _atomic_write(img: sitk.Image, out_file: str | Path, compress: bool = True) -> None:
    # the temporary name ends with out_file's name, so SimpleITK picks the writer from the same ending; a full
    # disk makes WriteImage raise RuntimeError without errno: atomic_write removes the temporary and turns it
    # into the OSError ENOSPC naming out_file (file_ops.out_of_space), one line through run_command
    atomic_write(out_file, lambda tmp: sitk.WriteImage(img, str(tmp), compress), keep_extension=True)


def array_to_sitk(arr: np.ndarray, props: dict | None) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    if props is not None:
        img.SetSpacing([float(s) for s in reversed(props["spacing"])])
        img.SetOrigin(props["origin"])
        img.SetDirection(props["direction"])
    return img


def write_seg(seg: np.ndarray, props: dict | None, out_file: str | Path) -> None:
    """Write a label map in the geometry ``props`` (as returned by the readers)."""
    seg = np.asarray(seg)
    if seg.min() < 0 or seg.max() > 255:
        raise ValueError(f"{out_file}: label values must be in 0..255")
    _atomic_write(array_to_sitk(seg.astype(np.uint8), props), out_file)


def write_image(arr: np.ndarray, props: dict | None, out_file: str | Path) -> None:
    """Write a single-channel image (float for volumetric formats; natural formats take uint8)."""
    arr = np.asarray(arr)
    if file_ending_of(out_file) in NATURAL_IMAGE_ENDINGS and arr.dtype != np.uint8:
        raise ValueError(f"{out_file}: .png/.tif/.bmp outputs must be uint8; scale the array first")
    _atomic_write(array_to_sitk(arr, props), out_file)


def geometry_matches(p1: dict, p2: dict, tol: float = 1e-3) -> list[str]:
    """Names of the geometry fields that differ between two props (empty list: same geometry)."""
    bad = []
    if list(p1["shape"]) != list(p2["shape"]):
        bad.append("size")
    for key in ("spacing", "origin", "direction"):
        a, b = np.asarray(p1[key], float), np.asarray(p2[key], float)
        if a.shape != b.shape or not np.allclose(a, b, atol=tol, rtol=tol):
            bad.append(key)
    return bad
