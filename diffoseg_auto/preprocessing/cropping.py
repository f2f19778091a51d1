"""Crop a case to the non-zero region of its image (nnU-Net's 'crop to non-zero')."""
from __future__ import annotations

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice, get_bbox_from_mask_npwhere


def nonzero_bbox(data: np.ndarray, segs: np.ndarray | None = None) -> list[list[int]]:
    """Bounding box ``[[lo, hi), ...]`` of voxels that are non-zero in any channel.

    Labelled voxels (any rater, any foreground class) are added to the box so that the
    crop never removes annotations. An all-zero image keeps its full extent.
    """
    mask = np.any(data != 0, axis=0)
    if segs is not None and segs.size:
        mask = mask | np.any(segs > 0, axis=0)
    if not mask.any():
        return [[0, int(s)] for s in mask.shape]
    return [[int(lo), int(hi)] for lo, hi in get_bbox_from_mask_npwhere(mask)]  # n-D (the other helper is 3D only)


def crop_to_nonzero(data: np.ndarray, segs: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, list[list[int]]]:
    """(data (C,*S), segs (R,*S) or None) -> cropped copies and the bbox in original coordinates."""
    bbox = nonzero_bbox(data, segs)
    sl = (slice(None), *bounding_box_to_slice(bbox))
    data_c = np.ascontiguousarray(data[sl])
    segs_c = np.ascontiguousarray(segs[sl]) if segs is not None else None
    return data_c, segs_c, bbox
