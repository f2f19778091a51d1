"""Random-patch data loader over preprocessed multi-rater cases (batchgenerators DataLoader API).

Each batch: ``data`` (B,C,*P) float32, ``seg`` (B,R,*P) uint8 (every rater, 0 where a rater is
missing), ``rater_mask`` (B,R) bool, ``keys`` (case names). A fraction
``oversample_foreground_percent`` of every batch is centred on a voxel drawn from the case's
``class_locations`` (the union of the raters' masks). Images smaller than the patch are padded
(data with 0, labels with background). For a 2D configuration of 3D data a slice along
``slice_axis`` is drawn first (foreground samples pick a slice that contains the class).

Randomness comes only from ``self.rng`` (numpy RandomState) seeded from (seed, epoch, thread),
so ``set_epoch(e)`` reproduces epoch e exactly in the in-process path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase

from diffoseg_auto.preprocessing.case_storage import load_case


def random_bbox(shape: tuple[int, ...], patch_size: tuple[int, ...], rng: np.random.RandomState,
                center: np.ndarray | None = None) -> list[list[int]]:
    """Patch box inside ``shape`` (padding symmetrically when the image is smaller), random or centred on ``center``."""
    bbox = []
    for d, (s, p) in enumerate(zip(shape, patch_size)):
        need = max(0, p - s)
        lo_min = -(need // 2)
        lo_max = s + need // 2 + need % 2 - p
        if center is None:
            lo = rng.randint(lo_min, lo_max + 1)
        else:
            lo = int(np.clip(int(center[d]) - p // 2, lo_min, lo_max))
        bbox.append([lo, lo + p])
    return bbox


class DiffOSegDataLoader(SlimDataLoaderBase):
    def __init__(self, folder: str | Path, cases: list[str], batch_size: int, patch_size: list[int],
                 oversample_foreground_percent: float = 0.33, slice_axis: int | None = None,
                 seed: int = 0, rank: int = 0):
        if not cases:
            raise ValueError(f"{folder}: no cases to load (empty training/validation split).")
        super().__init__(list(cases), batch_size, None)
        self.folder = Path(folder)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.oversample_foreground_percent = float(oversample_foreground_percent)
        self.slice_axis = slice_axis
        self.seed, self.rank, self.epoch = int(seed), int(rank), 0
        self.rng = np.random.RandomState()
        self._reseed()

    # -- seeding: (seed, rank, epoch, worker thread) -> RandomState
    def _reseed(self) -> None:
        self.rng = np.random.RandomState([self.seed % 2**32, self.rank, self.epoch, self.thread_id])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._reseed()

    def set_thread_id(self, thread_id: int) -> None:
        super().set_thread_id(thread_id)
        self._reseed()  # background workers each get a different stream

    def get_rng_state(self) -> dict:
        return {"seed": self.seed, "rank": self.rank, "epoch": self.epoch, "state": self.rng.get_state()}

    # -- sampling
    def _force_foreground(self, b: int) -> bool:
        if self.batch_size == 1:
            return self.rng.uniform() < self.oversample_foreground_percent
        return b >= round(self.batch_size * (1 - self.oversample_foreground_percent))

    def _pick_location(self, class_locations: dict) -> np.ndarray | None:
        classes = [c for c, loc in class_locations.items() if int(c) != 0 and len(loc) > 0]
        if not classes:
            return None
        locs = np.asarray(class_locations[classes[self.rng.randint(len(classes))]])
        return locs[self.rng.randint(len(locs))]

    def load_patch(self, case: str, force_fg: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        data, seg, rater_mask, props = load_case(self.folder, case)
        loc = self._pick_location(props.get("class_locations", {})) if force_fg else None
        if self.slice_axis is not None and data.ndim == len(self.patch_size) + 2:
            ax = self.slice_axis
            idx = int(loc[ax]) if loc is not None else self.rng.randint(data.shape[1 + ax])
            sl = (slice(None),) * (1 + ax) + (idx,)
            data, seg = data[sl], seg[sl]
            if loc is not None:
                loc = np.delete(loc, ax)
        elif data.ndim != len(self.patch_size) + 1:
            raise ValueError(f"{self.folder / case}: data has {data.ndim - 1} spatial dims but the patch {list(self.patch_size)} "
                             f"has {len(self.patch_size)}; set slice_axis for a 2D configuration of 3D data.")
        bbox = random_bbox(data.shape[1:], self.patch_size, self.rng, loc)
        # bbox covers the spatial axes only; outside the image: data 0, labels background
        return (np.asarray(crop_and_pad_nd(data, bbox, 0), dtype=np.float32),
                np.asarray(crop_and_pad_nd(seg, bbox, 0), dtype=np.uint8), np.asarray(rater_mask, dtype=bool))

    def generate_train_batch(self) -> dict:
        keys = [self._data[i] for i in self.rng.randint(0, len(self._data), self.batch_size)]
        patches = [self.load_patch(k, self._force_foreground(b)) for b, k in enumerate(keys)]
        return {"data": np.stack([p[0] for p in patches]), "seg": np.stack([p[1] for p in patches]),
                "rater_mask": np.stack([p[2] for p in patches]), "keys": keys}
