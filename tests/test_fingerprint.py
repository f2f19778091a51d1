"""Fingerprint of a tiny dataset whose every number is computed by hand (see comments)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from diffoseg_auto.dataset.raw_dataset import DatasetDescription, RawDataset, write_dataset_json
from planners.fingerprint import aggregate_fingerprints, case_fingerprint, extract_fingerprint, extract_fingerprint_dataset


def _write(arr: np.ndarray, spacing_array_order, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(s) for s in reversed(spacing_array_order)])
    sitk.WriteImage(img, str(path))


def make_known_dataset(folder: Path) -> Path:
    """case_a: 8x8, spacing (1, 2); non-zero block rows/cols 1..6 (value 10), inside it the
    union of the raters' foreground [2:4, 2:5] holds 1..6. Rater r0 draws [2:4, 2:4] (4 voxels),
    r1 draws [2:4, 2:5] (6 voxels). case_b: 8x8 of 5s, spacing (1, 1); r0 annotated it empty,
    r1 did not annotate it."""
    img_a = np.zeros((8, 8), np.float32)
    img_a[1:7, 1:7] = 10
    img_a[2:4, 2:5] = np.array([[1, 2, 3], [4, 5, 6]])
    r0_a = np.zeros((8, 8), np.uint8)
    r0_a[2:4, 2:4] = 1
    r1_a = np.zeros((8, 8), np.uint8)
    r1_a[2:4, 2:5] = 1
    _write(img_a, (1, 2), folder / "imagesTr" / "case_a_0000.nii.gz")
    _write(r0_a, (1, 2), folder / "labelsTr" / "r0" / "case_a.nii.gz")
    _write(r1_a, (1, 2), folder / "labelsTr" / "r1" / "case_a.nii.gz")
    _write(np.full((8, 8), 5, np.float32), (1, 1), folder / "imagesTr" / "case_b_0000.nii.gz")
    _write(np.zeros((8, 8), np.uint8), (1, 1), folder / "labelsTr" / "r0" / "case_b.nii.gz")
    (folder / "labelsTr" / "r1").mkdir(parents=True, exist_ok=True)
    write_dataset_json(folder, DatasetDescription(name="Known", channel_names={"0": "MRI"},
                                                  labels={"background": 0, "lesion": 1}, raters=["r0", "r1"],
                                                  num_training=2, file_ending=".nii.gz"))
    return folder


@pytest.fixture
def known(tmp_path: Path) -> RawDataset:
    return RawDataset(make_known_dataset(tmp_path / "Dataset901_Known"))


def test_geometry_and_intensities(known: RawDataset) -> None:
    fp = extract_fingerprint(known, num_processes=1)
    assert fp["num_cases"] == 2 and fp["num_raters"] == 2 and fp["raters"] == ["r0", "r1"]
    assert fp["spacings"] == [[1.0, 2.0], [1.0, 1.0]]
    assert fp["shapes_before_crop"] == [[8, 8], [8, 8]]
    assert fp["shapes_after_crop"] == [[6, 6], [8, 8]]  # case_a cropped to its non-zero block
    assert fp["median_relative_size_after_cropping"] == pytest.approx((36 / 64 + 1) / 2)
    fg = fp["foreground_intensity_properties_per_channel"]["0"]  # samples: 1..6 (case_b has no foreground)
    assert fg["mean"] == pytest.approx(3.5)
    assert fg["std"] == pytest.approx(math.sqrt(35 / 12))
    assert fg["median"] == pytest.approx(3.5)
    assert (fg["min"], fg["max"]) == (1.0, 6.0)
    assert fg["percentile_00_5"] == pytest.approx(1.025)
    assert fg["percentile_99_5"] == pytest.approx(5.975)
    assert fp["intensity_range_per_channel"]["0"] == {"min": 1.0, "max": 10.0, "integer_valued": True}


def test_multi_rater_statistics(known: RawDataset) -> None:
    fp = extract_fingerprint(known, num_processes=1)
    cov = fp["coverage"]
    assert cov["rater_mask"] == {"case_a": [True, True], "case_b": [True, False]}
    assert cov["cases_per_rater"] == {"r0": 2, "r1": 1}
    assert (cov["raters_per_case_min"], cov["raters_per_case_max"], cov["complete"]) == (1, 2, False)
    agree = fp["inter_rater_agreement"]["per_class"]["1"]
    assert agree["num_pairs"] == 1  # only case_a has two raters
    assert agree["mean_pairwise_dice"] == pytest.approx(2 * 4 / (4 + 6))
    assert agree["mean_pairwise_ged_distance"] == pytest.approx(1 - 4 / 6)
    # volumes: case_a r0 4, r1 6 (mean 5); case_b r0 0 (mean 0) -> r0 (4+0)/(5+0), r1 6/5
    assert fp["rater_volume_bias"]["per_class"]["1"] == {"r0": pytest.approx(0.8), "r1": pytest.approx(1.2)}
    obj = fp["object_statistics"]["per_class"]["1"]
    assert (obj["num_objects"], obj["size_voxels_min"], obj["size_voxels_max"]) == (2, 4, 6)
    assert obj["size_voxels_median"] == pytest.approx(5.0)
    assert obj["size_physical_median"] == pytest.approx(5.0 * 1.5)  # median voxel volume of (2, 1)
    assert obj["objects_per_annotation_mean"] == pytest.approx(2 / 3)
    # fractions of the cropped image: 4/36, 6/36, 0/64
    assert fp["foreground_fraction"]["per_class"]["1"] == pytest.approx((4 / 36 + 6 / 36 + 0) / 3)
    assert fp["foreground_fraction"]["union_of_raters"] == pytest.approx((6 / 36 + 0) / 2)


def test_empty_vs_empty_agree_perfectly(tmp_path: Path) -> None:
    folder = tmp_path / "Dataset902_Empty"
    _write(np.ones((6, 6), np.float32), (1, 1), folder / "imagesTr" / "c_0000.nii.gz")
    for r in ("a", "b", "c"):
        _write(np.zeros((6, 6), np.uint8), (1, 1), folder / "labelsTr" / r / "c.nii.gz")
    write_dataset_json(folder, DatasetDescription(name="Empty", channel_names={"0": "CT"},
                                                  labels={"background": 0, "x": 1}, raters=["a", "b", "c"],
                                                  num_training=1, file_ending=".nii.gz"))
    fp = extract_fingerprint(RawDataset(folder), num_processes=1)
    a = fp["inter_rater_agreement"]["per_class"]["1"]
    assert (a["mean_pairwise_dice"], a["mean_pairwise_ged_distance"], a["num_pairs"]) == (1.0, 0.0, 3)
    assert fp["rater_volume_bias"]["per_class"]["1"] == {"a": 1.0, "b": 1.0, "c": 1.0}
    # no foreground anywhere: intensity statistics fall back to all voxels (all 1)
    assert fp["foreground_intensity_properties_per_channel"]["0"]["mean"] == 1.0


def test_multiclass_agreement_is_per_class(tmp_path: Path) -> None:
    folder = tmp_path / "Dataset903_Multi"
    _write(np.ones((4, 4), np.float32), (1, 1), folder / "imagesTr" / "c_0000.nii.gz")
    a = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [2, 2, 2, 0], [0, 0, 0, 0]], np.uint8)
    b = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
    _write(a, (1, 1), folder / "labelsTr" / "a" / "c.nii.gz")
    _write(b, (1, 1), folder / "labelsTr" / "b" / "c.nii.gz")
    write_dataset_json(folder, DatasetDescription(name="Multi", channel_names={"0": "x"},
                                                  labels={"background": 0, "p": 1, "q": 2}, raters=["a", "b"],
                                                  num_training=1, file_ending=".nii.gz"))
    fp = extract_fingerprint(RawDataset(folder), num_processes=1)
    pc = fp["inter_rater_agreement"]["per_class"]
    assert pc["1"]["mean_pairwise_dice"] == 1.0
    assert pc["2"]["mean_pairwise_dice"] == pytest.approx(2 * 1 / (3 + 1))
    assert pc["2"]["mean_pairwise_ged_distance"] == pytest.approx(1 - 1 / 3)
    assert fp["inter_rater_agreement"]["mean_pairwise_dice"] == pytest.approx((1.0 + 0.5) / 2)
    assert fp["rater_volume_bias"]["per_class"]["2"] == {"a": pytest.approx(1.5), "b": pytest.approx(0.5)}


def test_parallel_equals_in_process(known: RawDataset) -> None:
    per_case = [case_fingerprint(known, c, seed=1234 + i) for i, c in enumerate(known.cases)]
    serial = aggregate_fingerprints(per_case, known.raters, 2, 1)
    parallel = extract_fingerprint(known, num_processes=2)
    assert serial == parallel


def test_dataset_level_writes_files(env_folders: dict, tmp_path: Path) -> None:
    make_known_dataset(env_folders["raw"] / "Dataset901_Known")
    fp = extract_fingerprint_dataset(901, num_processes=1)
    out = env_folders["preprocessed"] / "Dataset901_Known"
    assert (out / "dataset_fingerprint.json").is_file() and (out / "dataset.json").is_file()
    assert fp["shapes_after_crop"] == [[6, 6], [8, 8]]
