"""Preprocessing: crop, normalise, resample every rater, store; and the undo used by prediction."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from diffoseg_auto.cli.console import run_command
from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
from diffoseg_auto.plans.plans import load_plans
from diffoseg_auto.preprocessing.case_storage import list_preprocessed_cases, load_case
from diffoseg_auto.preprocessing.cropping import crop_to_nonzero
from diffoseg_auto.preprocessing.export import revert_labels, revert_probabilities
from diffoseg_auto.preprocessing.normalization import normalize
from diffoseg_auto.preprocessing.preprocessor import DefaultPreprocessor
from diffoseg_auto.preprocessing.resampling import resample_labels
from planners.experiment_planner import plan_experiment
from planners.fingerprint import extract_fingerprint_dataset
from planners.plan_and_preprocess_entrypoints import plan_and_preprocess


def _write(arr, spacing, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(s) for s in reversed(spacing)])
    sitk.WriteImage(img, str(path))


def _ball(shape, center, radius, spacing) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, center)) <= radius ** 2


def _dice(a, b) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def make_dataset(root: Path, name: str, cases: dict, raters=("a", "b")) -> Path:
    """cases: case -> (image array, spacing, {rater: label array})."""
    folder = root / name
    for case, (img, sp, labels) in cases.items():
        _write(img.astype(np.float32), sp, folder / "imagesTr" / f"{case}_0000.nii.gz")
        for r in raters:
            (folder / "labelsTr" / r).mkdir(parents=True, exist_ok=True)
            if r in labels:
                _write(labels[r].astype(np.uint8), sp, folder / "labelsTr" / r / f"{case}.nii.gz")
    write_dataset_json(folder, DatasetDescription(name=name, channel_names={"0": "MRI"},
                                                  labels={"background": 0, "x": 1}, raters=list(raters),
                                                  num_training=len(cases), file_ending=".nii.gz"))
    return folder


def _plans_for(name: str):
    extract_fingerprint_dataset(name, num_processes=1)
    return plan_experiment(name)


def test_crop_keeps_labelled_voxels() -> None:
    data = np.zeros((1, 10, 10), np.float32)
    data[0, 2:5, 3:6] = 1
    segs = np.zeros((2, 10, 10), np.uint8)
    segs[1, 7, 8] = 1  # annotation outside the non-zero image region
    d, s, bbox = crop_to_nonzero(data, segs)
    assert bbox == [[2, 8], [3, 9]]
    assert s[1].sum() == 1 and d.shape == (1, 6, 6)


def test_normalisation_values() -> None:
    x = np.array([[[0, 1, 2, 3]]], np.float32)
    z = normalize(x, ["zscore"], [False], {})
    assert z.mean() == pytest.approx(0, abs=1e-6) and z.std() == pytest.approx(1, abs=1e-5)
    props = {"0": {"mean": 1.0, "std": 2.0, "percentile_00_5": 0.5, "percentile_99_5": 2.5}}
    np.testing.assert_allclose(normalize(x, ["ct"], [False], props)[0, 0], [-0.25, 0, 0.5, 0.75])
    np.testing.assert_allclose(normalize(np.full((1, 2, 2), 255, np.float32), ["rescale_0_1"], [False], {}), 1.0)
    masked = normalize(np.array([[[0, 2, 4]]], np.float32), ["zscore"], [True], {}, np.array([[False, True, True]]))
    np.testing.assert_allclose(masked[0, 0], [0, -1, 1])


def test_one_hot_resampling_keeps_thin_line() -> None:
    lab = np.zeros((20, 20), np.uint8)
    lab[:, 10] = 1  # one voxel wide
    out = resample_labels(lab, 2, [20, 25], [1, 1], [1, 0.8])
    assert all(out[r].sum() >= 1 for r in range(20))  # present in every row after resampling


def test_round_trip_exact_when_spacing_unchanged(env_folders) -> None:
    rng = np.random.default_rng(0)
    cases = {}
    for i in range(3):
        img = np.zeros((24, 28))
        img[2:22, 3:25] = rng.normal(100, 10, (20, 22))
        lab = _ball((24, 28), (12, 13), 5 + i, (1, 1)).astype(np.uint8)
        cases[f"c{i}"] = (img, (1.0, 1.0), {"a": lab, "b": np.roll(lab, 1, 0)})
    make_dataset(env_folders["raw"], "Dataset910_Same", cases)
    plans = _plans_for("Dataset910_Same")
    pp = DefaultPreprocessor(plans, "2d")
    img, sp, labels = cases["c1"]
    segs = np.stack([labels["a"], labels["b"]])
    props = {"spacing": [1.0, 1.0], "shape": [24, 28], "origin": [0, 0], "direction": [1, 0, 0, 1]}
    data, seg, mask, prop = pp.run_case_arrays(img[None].astype(np.float32), segs, np.array([True, True]), props, "c1")
    assert prop["bbox"] == [[2, 22], [3, 25]] and prop["shape_after_crop"] == [20, 22]
    assert prop["shape_after_resample"] == [20, 22] and data.shape == (1, 20, 22) and seg.shape == (2, 20, 22)
    cfg = plans.configurations["2d"]
    np.testing.assert_array_equal(revert_labels(seg[0], prop, cfg, 2), labels["a"])
    probs = revert_probabilities(np.stack([1 - seg[1], seg[1]]).astype(np.float32), prop, cfg)
    assert probs.shape == (2, 24, 28) and probs[0, 0, 0] == 1.0 and probs[1, 0, 0] == 0.0
    np.testing.assert_array_equal(probs.argmax(0), labels["b"])
    locs = prop["class_locations"][1]
    union = np.logical_or(seg[0], seg[1])
    assert len(locs) == union.sum() and union[tuple(locs.T)].all()


def test_round_trip_anisotropic_3d(env_folders) -> None:
    cases = {}
    for i, sp in enumerate([(4.0, 1.0, 1.0), (4.0, 0.8, 0.8)]):
        shape = (10, 24, 24) if i == 0 else (10, 30, 30)
        img = np.ones(shape) * 50
        lab = _ball(shape, (20, 12, 12), 9, sp).astype(np.uint8)
        cases[f"v{i}"] = (img, sp, {"a": lab, "b": lab})
    make_dataset(env_folders["raw"], "Dataset911_Aniso", cases)
    plans = _plans_for("Dataset911_Aniso")
    cfg = plans.configurations["3d_fullres"]
    assert cfg.spacing == pytest.approx([4.0, 0.9, 0.9])
    pp = DefaultPreprocessor(plans, "3d_fullres")
    folder = env_folders["raw"] / "Dataset911_Aniso"
    data, seg, mask, prop = pp.run_case([folder / "imagesTr" / "v0_0000.nii.gz"],
                                        [folder / "labelsTr" / "a" / "v0.nii.gz", folder / "labelsTr" / "b" / "v0.nii.gz"])
    assert prop["shape_after_resample"] == [10, 27, 27] and prop["spacing"] == pytest.approx([4.0, 0.9, 0.9])
    back = revert_labels(seg[0], prop, cfg, 2)
    orig = cases["v0"][2]["a"]
    assert back.shape == orig.shape
    assert _dice(back > 0, orig > 0) >= 0.95


def test_missing_rater_survives(env_folders) -> None:
    lab = np.zeros((16, 16), np.uint8)
    lab[4:8, 4:8] = 1
    img = np.ones((16, 16)) * 3
    cases = {"m0": (img, (1.0, 1.0), {"a": lab}), "m1": (img, (1.0, 1.0), {"a": lab, "b": lab})}
    make_dataset(env_folders["raw"], "Dataset912_Missing", cases)
    plans = _plans_for("Dataset912_Missing")
    out = DefaultPreprocessor(plans, "2d").run("Dataset912_Missing", num_processes=1)
    data, seg, mask, prop = load_case(out, "m0", mmap=False)
    assert mask.tolist() == [True, False]
    assert seg[1].sum() == 0 and seg[0].sum() == 16
    assert list_preprocessed_cases(out) == ["m0", "m1"]


@pytest.mark.slow
def test_cli_end_to_end_with_workers(env_folders) -> None:
    from dataset_conversion.generate_toy_dataset import generate_toy_dataset

    generate_toy_dataset(env_folders["raw"] / "Dataset920_Toy", dim=2, num_cases=6, num_raters=3, image_size=32)
    plan_and_preprocess(["-d", "920", "-np", "2", "-c", "2d", "3d_fullres"])
    pre = env_folders["preprocessed"] / "Dataset920_Toy"
    for f in ("dataset.json", "dataset_fingerprint.json", "DiffOSegPlans.json"):
        assert (pre / f).is_file()
    plans = load_plans(pre / "DiffOSegPlans.json")
    assert set(plans.configurations) == {"2d"} and plans.num_raters == 3
    cases = list_preprocessed_cases(pre / "DiffOSegPlans_2d")
    assert len(cases) == 6
    data, seg, mask, prop = load_case(pre / "DiffOSegPlans_2d", cases[0], mmap=False)
    assert seg.shape[0] == 3 and seg.dtype == np.uint8 and data.dtype == np.float32
    assert set(prop) >= {"original_props", "bbox", "shape_after_crop", "shape_after_resample", "spacing", "class_locations"}


def test_corrupt_dataset_fails_with_integrity_message(env_folders, capsys) -> None:
    pytest.importorskip("diffoseg_auto.dataset.integrity")
    lab = np.zeros((16, 16), np.uint8)
    lab[2:5, 2:5] = 1
    folder = make_dataset(env_folders["raw"], "Dataset913_Bad", {"x0": (np.ones((16, 16)), (1, 1), {"a": lab})})
    _write(np.zeros((8, 8), np.uint8), (1, 1), folder / "labelsTr" / "b" / "x0.nii.gz")  # wrong size
    assert run_command("diffoseg_plan_and_preprocess", plan_and_preprocess,
                       ["-d", "913", "-np", "1", "--verify_dataset_integrity"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # progress lines (INFO) may come first
    assert last.startswith("diffoseg_plan_and_preprocess: error:") and "x0.nii.gz" in last
    assert not (env_folders["preprocessed"] / "Dataset913_Bad" / "dataset_fingerprint.json").exists()
