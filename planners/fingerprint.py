"""Dataset fingerprint: what the planner needs to know about a multi-rater dataset.

nnU-Net's content (spacings, shapes after cropping to the non-zero region, foreground
intensity statistics per channel) plus multi-rater statistics: coverage, inter-rater
agreement (pairwise Dice and GED distance 1 - IoU, per class), each rater's volume bias,
connected-object sizes and foreground fractions. All numbers are defined in
documentation/planning.md ("Fingerprint").
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from scipy import ndimage

from diffoseg_auto.dataset.dataset_errors import DatasetFormatError
from diffoseg_auto.dataset.fingerprint_file import FINGERPRINT_FILE, load_fingerprint
from diffoseg_auto.dataset.raw_dataset import RawDataset, worker_raw_dataset
from diffoseg_auto.preprocessing.cropping import crop_to_nonzero
from diffoseg_auto.preprocessing.parallel import map_with_progress
from diffoseg_auto.utilities.file_ops import atomic_copy

NUM_FG_SAMPLES_PER_CASE = 10000


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s  # empty vs empty agree perfectly


def _ged_distance(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.logical_or(a, b).sum())
    return 0.0 if union == 0 else 1.0 - int(np.logical_and(a, b).sum()) / union


def case_fingerprint(raw: RawDataset, case: str, seed: int = 1234, num_samples: int = NUM_FG_SAMPLES_PER_CASE) -> dict:
    """Statistics of one case (combined over cases by ``aggregate_fingerprints``)."""
    data, segs, mask, props = raw.load_case(case)
    k_classes = raw.num_classes
    shape_before = list(data.shape[1:])
    data_c, segs_c, _ = crop_to_nonzero(data, segs)
    annotated = segs_c[mask]
    union_fg = np.any(annotated > 0, axis=0) if len(annotated) else np.zeros(data_c.shape[1:], bool)
    rng = np.random.default_rng(seed)
    fg_samples, all_samples, ranges = [], [], []
    for c in range(data_c.shape[0]):
        ch = data_c[c]
        v = ch[union_fg]
        fg_samples.append(rng.choice(v, num_samples, replace=False) if len(v) > num_samples else v)
        flat = ch.ravel()
        all_samples.append(rng.choice(flat, num_samples, replace=False) if flat.size > num_samples else flat)
        ranges.append({"min": float(ch.min()), "max": float(ch.max()),
                       "integer_valued": bool(np.all(np.mod(ch, 1) == 0))})
    per_class = {}
    rater_idx = np.flatnonzero(mask)
    voxel_volume = float(np.prod(props["spacing"]))
    for c in range(1, k_classes):
        binary = segs_c == c
        pairs = list(itertools.combinations(rater_idx, 2))
        sizes = []
        for k in rater_idx:
            lab, n = ndimage.label(binary[k])
            if n:
                sizes.extend(np.bincount(lab.ravel())[1:].tolist())
        per_class[str(c)] = {
            "volumes": {int(k): int(binary[k].sum()) for k in rater_idx},  # voxels, cropped image
            "pair_dice": [_dice(binary[a], binary[b]) for a, b in pairs],
            "pair_ged_distance": [_ged_distance(binary[a], binary[b]) for a, b in pairs],
            "object_sizes": sizes,
            "fractions": [float(binary[k].mean()) for k in rater_idx],
        }
    return {
        "case": case,
        "spacing": [float(s) for s in props["spacing"]],
        "shape_before_crop": shape_before,
        "shape_after_crop": list(data_c.shape[1:]),
        "relative_size_after_crop": float(np.prod(data_c.shape[1:]) / np.prod(shape_before)),
        "rater_mask": mask.tolist(),
        "fg_samples": fg_samples,
        "all_samples": all_samples,
        "intensity_range": ranges,
        "per_class": per_class,
        "union_fraction": float(union_fg.mean()) if len(annotated) else None,
        "voxel_volume": voxel_volume,
    }


def _intensity_stats(v: np.ndarray) -> dict:
    v = np.asarray(v, dtype=np.float64)
    if v.size == 0:
        return {k: 0.0 for k in ("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5")} | {"std": 1.0}
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)),
            "min": float(v.min()), "max": float(v.max()),
            "percentile_00_5": float(np.percentile(v, 0.5)), "percentile_99_5": float(np.percentile(v, 99.5))}


def _size_stats(sizes: list, voxel_volume: float) -> dict:
    if not sizes:
        return {"num_objects": 0, "size_voxels_mean": 0.0, "size_voxels_median": 0.0, "size_voxels_min": 0,
                "size_voxels_max": 0, "size_physical_median": 0.0}
    s = np.asarray(sizes, float)
    return {"num_objects": int(s.size), "size_voxels_mean": float(s.mean()), "size_voxels_median": float(np.median(s)),
            "size_voxels_min": int(s.min()), "size_voxels_max": int(s.max()),
            "size_physical_median": float(np.median(s) * voxel_volume)}


def aggregate_fingerprints(per_case: list[dict], raters: list[str], num_classes: int, num_channels: int) -> dict:
    """Combine ``case_fingerprint`` results into the dataset fingerprint (JSON-serialisable)."""
    if not per_case:
        raise DatasetFormatError("the dataset has no training cases (imagesTr is empty); add cases before planning")
    R = len(raters)
    fp: dict = {
        "num_cases": len(per_case),
        "cases": [p["case"] for p in per_case],
        "num_raters": R,
        "raters": list(raters),
        "num_classes": num_classes,
        "spacings": [p["spacing"] for p in per_case],
        "shapes_before_crop": [p["shape_before_crop"] for p in per_case],
        "shapes_after_crop": [p["shape_after_crop"] for p in per_case],
        "median_relative_size_after_cropping": float(np.median([p["relative_size_after_crop"] for p in per_case])),
    }
    fg_props, ranges = {}, {}
    for c in range(num_channels):
        fg = np.concatenate([p["fg_samples"][c] for p in per_case])
        if fg.size == 0:  # no rater drew anything: fall back to all voxels so normalisation stays defined
            fg = np.concatenate([p["all_samples"][c] for p in per_case])
        fg_props[str(c)] = _intensity_stats(fg)
        r = [p["intensity_range"][c] for p in per_case]
        ranges[str(c)] = {"min": min(x["min"] for x in r), "max": max(x["max"] for x in r),
                          "integer_valued": all(x["integer_valued"] for x in r)}
    fp["foreground_intensity_properties_per_channel"] = fg_props
    fp["intensity_range_per_channel"] = ranges

    masks = np.array([p["rater_mask"] for p in per_case], dtype=bool)
    fp["coverage"] = {
        "rater_mask": {p["case"]: p["rater_mask"] for p in per_case},
        "cases_per_rater": {r: int(masks[:, k].sum()) for k, r in enumerate(raters)},
        "raters_per_case_min": int(masks.sum(1).min()),
        "raters_per_case_max": int(masks.sum(1).max()),
        "raters_per_case_mean": float(masks.sum(1).mean()),
        "complete": bool(masks.all()),
    }

    agreement, bias, objects, fractions = {}, {}, {}, {}
    median_voxel_volume = float(np.median([p["voxel_volume"] for p in per_case]))
    for c in range(1, num_classes):
        key = str(c)
        dice = [d for p in per_case for d in p["per_class"][key]["pair_dice"]]
        ged = [d for p in per_case for d in p["per_class"][key]["pair_ged_distance"]]
        agreement[key] = {"mean_pairwise_dice": float(np.mean(dice)) if dice else None,
                          "mean_pairwise_ged_distance": float(np.mean(ged)) if ged else None,
                          "num_pairs": len(dice)}
        num = np.zeros(R)
        den = np.zeros(R)
        for p in per_case:
            vols = {int(k): v for k, v in p["per_class"][key]["volumes"].items()}
            if not vols:
                continue
            mean_v = float(np.mean(list(vols.values())))
            for k, v in vols.items():
                num[k] += v
                den[k] += mean_v
        bias[key] = {r: (float(num[k] / den[k]) if den[k] > 0 else 1.0) for k, r in enumerate(raters)}
        objects[key] = _size_stats([s for p in per_case for s in p["per_class"][key]["object_sizes"]], median_voxel_volume)
        n_ann = int(masks.sum())
        objects[key]["objects_per_annotation_mean"] = objects[key]["num_objects"] / n_ann if n_ann else 0.0
        fr = [f for p in per_case for f in p["per_class"][key]["fractions"]]
        fractions[key] = float(np.mean(fr)) if fr else 0.0
    valid = [a["mean_pairwise_dice"] for a in agreement.values() if a["mean_pairwise_dice"] is not None]
    valid_g = [a["mean_pairwise_ged_distance"] for a in agreement.values() if a["mean_pairwise_ged_distance"] is not None]
    fp["inter_rater_agreement"] = {"per_class": agreement,
                                   "mean_pairwise_dice": float(np.mean(valid)) if valid else None,
                                   "mean_pairwise_ged_distance": float(np.mean(valid_g)) if valid_g else None}
    fp["rater_volume_bias"] = {"per_class": bias}
    fp["object_statistics"] = {"per_class": objects}
    union = [p["union_fraction"] for p in per_case if p["union_fraction"] is not None]
    fp["foreground_fraction"] = {"per_class": fractions, "union_of_raters": float(np.mean(union)) if union else 0.0}
    return fp


def _fingerprint_job(job: tuple) -> dict:
    folder, case, seed = job
    return case_fingerprint(worker_raw_dataset(folder), case, seed)


def extract_fingerprint(raw: RawDataset, num_processes: int | None = None, seed: int = 1234) -> dict:
    """Fingerprint of every training case of ``raw`` (spread over ``num_processes`` processes)."""
    jobs = [(str(raw.folder), case, seed + i) for i, case in enumerate(raw.cases)]
    per_case = map_with_progress(_fingerprint_job, jobs, num_processes, desc=f"fingerprint {raw.name}")
    return aggregate_fingerprints(per_case, raw.raters, raw.num_classes, raw.num_channels)


def extract_fingerprint_dataset(dataset: str | int, num_processes: int | None = None, clean: bool = False,
                                verify_integrity: bool = False) -> dict:
    """Compute (or reuse) $diffoseg_preprocessed/<name>/dataset_fingerprint.json; also copies dataset.json there."""
    from diffoseg_auto.dataset.raw_dataset import open_raw_dataset
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.utilities.file_ops import save_json

    raw = open_raw_dataset(dataset)
    if verify_integrity:
        from diffoseg_auto.dataset.integrity import assert_dataset_integrity  # lazily: a separate module

        assert_dataset_integrity(raw.folder)
    out = preprocessed_root() / raw.name
    f = out / FINGERPRINT_FILE
    # the copy of dataset.json only after the fingerprint: a failed extraction leaves the folder as it was
    fp = load_fingerprint(f) if f.is_file() and not clean else extract_fingerprint(raw, num_processes)
    atomic_copy(raw.folder / "dataset.json", out / "dataset.json")
    if not f.is_file() or clean:
        save_json(fp, f)
    return fp
