"""Turn a raw multi-rater case into the preprocessed arrays of one configuration.

Order of operations (as nnU-Net): crop to the non-zero region -> normalise -> resample
image (spline order 3) and every rater's labels (one-hot linear + argmax) to the target
spacing -> sample foreground locations from the union of the raters.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from diffoseg_auto.dataset.dataset_errors import DatasetFormatError
from diffoseg_auto.io.image_io import read_images, read_seg
from diffoseg_auto.plans.plans import Plans, PlansValidationError
from diffoseg_auto.preprocessing.case_storage import save_case
from diffoseg_auto.preprocessing.cropping import crop_to_nonzero
from diffoseg_auto.preprocessing.normalization import normalize
from diffoseg_auto.preprocessing.parallel import map_with_progress
from diffoseg_auto.preprocessing.resampling import compute_new_shape, resample_data, resample_rater_stack

logger = logging.getLogger(__name__)

MAX_CLASS_LOCATIONS = 10000


def target_spacing_for_case(configured: Sequence[float], original: Sequence[float], slice_axis: int | None) -> list[float]:
    """The configuration's spacing; a 2d configuration of 3D data keeps the case's own spacing along slice_axis."""
    if len(configured) != len(original):
        raise PlansValidationError(f"plans spacing {list(configured)} has {len(configured)} axes but the case has {len(original)}. "
                         "Were the plans made for another dataset? Re-run diffoseg_plan_experiment.")
    sp = [float(s) for s in configured]
    if slice_axis is not None and len(sp) == 3:
        sp[slice_axis] = float(original[slice_axis])
    return sp


def sample_class_locations(segs: np.ndarray, rater_mask: np.ndarray, num_classes: int, seed: int,
                           max_per_class: int = MAX_CLASS_LOCATIONS) -> dict[int, np.ndarray]:
    """Per foreground class: voxel coordinates (n, ndim) where ANY annotating rater has that class."""
    rng = np.random.default_rng(seed)
    annotated = segs[np.asarray(rater_mask, bool)]
    out: dict[int, np.ndarray] = {}
    for c in range(1, num_classes):
        union = np.any(annotated == c, axis=0) if len(annotated) else np.zeros(segs.shape[1:], bool)
        locs = np.argwhere(union)
        if len(locs) > max_per_class:
            locs = locs[np.sort(rng.choice(len(locs), max_per_class, replace=False))]
        out[c] = locs.astype(np.int64)
    return out


class DefaultPreprocessor:
    def __init__(self, plans: Plans, configuration: str) -> None:
        self.plans = plans
        self.configuration_name = configuration
        self.configuration = plans.get_configuration(configuration)

    def run_case_arrays(self, data: np.ndarray, segs: np.ndarray | None, rater_mask: np.ndarray | None, props: dict,
                        case_identifier: str = "") -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, dict]:
        """(C,*S) image, (R,*S) labels or None, (R,) mask or None, image props -> preprocessed arrays + properties."""
        cfg = self.configuration
        data = np.asarray(data, dtype=np.float32)
        if data.shape[0] != len(cfg.normalization_schemes):
            raise PlansValidationError(f"{case_identifier or 'case'}: image has {data.shape[0]} channel(s), the plans expect "
                             f"{len(cfg.normalization_schemes)} (dataset.json channel_names).")
        if segs is not None and rater_mask is None:
            rater_mask = np.ones(segs.shape[0], bool)
        data, segs_c, bbox = crop_to_nonzero(data, None if segs is None else segs[np.asarray(rater_mask, bool)])
        if segs is not None:  # crop the full stack (missing raters are zeros) with the same box
            sl = (slice(None), *[slice(lo, hi) for lo, hi in bbox])
            segs = np.ascontiguousarray(segs[sl])
        shape_after_crop = list(data.shape[1:])
        nonzero_mask = np.any(data != 0, axis=0)
        data = normalize(data, cfg.normalization_schemes, cfg.use_mask_for_norm,
                         self.plans.foreground_intensity_properties_per_channel, nonzero_mask)

        orig_spacing = [float(s) for s in props["spacing"]]
        target = target_spacing_for_case(cfg.spacing, orig_spacing, cfg.slice_axis)
        new_shape = compute_new_shape(shape_after_crop, orig_spacing, target)
        data = resample_data(data, new_shape, orig_spacing, target, cfg.resampling_order_data)
        seg_out = None
        properties = {
            "original_props": props,
            "bbox": bbox,
            "shape_after_crop": shape_after_crop,
            "shape_after_resample": list(new_shape),
            "spacing": target,
            "class_locations": {},
        }
        if segs is not None:
            seg_out = resample_rater_stack(segs, rater_mask, self.plans.num_classes, new_shape, orig_spacing, target,
                                           cfg.resampling_order_seg)
            seed = zlib.crc32(case_identifier.encode())  # per case, reproducible across runs and processes
            properties["class_locations"] = sample_class_locations(seg_out, rater_mask, self.plans.num_classes, seed)
        logger.debug(f"{case_identifier}: crop {shape_after_crop} -> resampled {new_shape} at spacing {target}")
        return data, seg_out, None if rater_mask is None else np.asarray(rater_mask, bool), properties

    def run_case(self, image_files: list[Path], label_files: list[Path | None] | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, dict]:
        """Read image channel files (and per-rater label files, None = rater missing) and preprocess."""
        data, props = read_images(image_files)
        segs = rater_mask = None
        if label_files is not None:
            rater_mask = np.array([f is not None for f in label_files], dtype=bool)
            segs = np.zeros((len(label_files), *data.shape[1:]), dtype=np.uint8)
            for k, f in enumerate(label_files):
                if f is not None:
                    s, _ = read_seg(f)
                    if list(s.shape) != list(data.shape[1:]):
                        raise DatasetFormatError(f"{f}: label shape {list(s.shape)} differs from the image {list(data.shape[1:])}")
                    segs[k] = s
        name = Path(image_files[0]).name
        return self.run_case_arrays(data, segs, rater_mask, props, case_identifier=name)

    def output_folder(self, dataset_name: str) -> Path:
        from diffoseg_auto.paths import preprocessed_root

        return preprocessed_root() / dataset_name / self.configuration.data_identifier

    def run(self, dataset_name: str, num_processes: int | None = None) -> Path:
        """Preprocess every training case of the raw dataset into $diffoseg_preprocessed/<name>/<data_identifier>/."""
        from diffoseg_auto.dataset.raw_dataset import open_raw_dataset

        from diffoseg_auto.preprocessing.resume import prepare_output_folder, preprocessing_signature
        from diffoseg_auto.utilities.run_lock import RunLock

        raw = open_raw_dataset(dataset_name)
        out = self.output_folder(raw.name)
        with RunLock(out, "diffoseg_preprocess"):
            done = prepare_output_folder(out, preprocessing_signature(self.plans, self.configuration_name))
            todo = [case for case in raw.cases if case not in done]
            if done:
                print(f"{out}: {len(done)} case(s) already preprocessed, {len(todo)} to do")
            jobs = [(self.plans, self.configuration_name, str(raw.folder), case, str(out)) for case in todo]
            map_with_progress(_preprocess_one, jobs, num_processes, desc=f"preprocess {self.configuration_name}")
        return out


def _preprocess_one(job: tuple) -> str:
    plans, configuration, raw_folder, case, out = job
    from diffoseg_auto.dataset.raw_dataset import worker_raw_dataset

    raw = worker_raw_dataset(raw_folder)
    data, segs, mask, props = raw.load_case(case)
    pp = DefaultPreprocessor(plans, configuration)
    data, seg, mask, properties = pp.run_case_arrays(data, segs, mask, props, case_identifier=case)
    save_case(out, case, data, seg, mask, properties)
    return case
