"""verify_dataset_integrity: one broken dataset per rule, each message must name the culprit."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.conversion_utils import write_image_array, write_label_array
from dataset_conversion.generate_toy_dataset import generate_toy_dataset
from diffoseg_auto.dataset.integrity import (
    DatasetIntegrityError, assert_dataset_integrity, main, verify_dataset_integrity,
)
from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json

RATERS = ["rater0_dilate", "rater1_erode"]


@pytest.fixture(scope="module")
def _template(tmp_path_factory) -> Path:
    return generate_toy_dataset(tmp_path_factory.mktemp("tpl") / "Dataset010_Toy", num_cases=4, num_raters=2,
                                image_size=32, seed=1)


@pytest.fixture
def ds(_template, tmp_path) -> Path:
    """A fresh copy of a valid 4-case, 2-rater dataset that a test may break."""
    return Path(shutil.copytree(_template, tmp_path / "Dataset010_Toy"))


def _edit_json(folder: Path, **changes) -> None:
    path = folder / "dataset.json"
    dj = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            dj.pop(k)
        else:
            dj[k] = v
    path.write_text(json.dumps(dj))


def _only(problems: list[str], *needles: str) -> str:
    """Exactly one problem must be reported and it must contain every needle."""
    assert len(problems) == 1, problems
    for n in needles:
        assert n in problems[0], (n, problems[0])
    return problems[0]


def test_valid_dataset_has_no_problems(ds):
    assert verify_dataset_integrity(ds) == []
    assert_dataset_integrity(ds)  # does not raise


def test_missing_folder_and_missing_json(tmp_path, ds):
    _only(verify_dataset_integrity(tmp_path / "nope"), "nope", "does not exist")
    (ds / "dataset.json").unlink()
    _only(verify_dataset_integrity(ds), "dataset.json", "missing")


def test_invalid_json(ds):
    (ds / "dataset.json").write_text("{not json")
    _only(verify_dataset_integrity(ds), "dataset.json", "not valid JSON")


def test_missing_field(ds):
    _edit_json(ds, name=None)
    _only(verify_dataset_integrity(ds), "dataset.json", "'name' is missing")


def test_num_training_mismatch(ds):
    _edit_json(ds, numTraining=7)
    _only(verify_dataset_integrity(ds), "dataset.json", "numTraining is 7", "4 case(s)")


def test_labels_need_background_zero(ds):
    _edit_json(ds, labels={"object": 1, "other": 0})
    _only(verify_dataset_integrity(ds), "dataset.json", '"background": 0')


def test_labels_must_be_consecutive(ds):
    _edit_json(ds, labels={"background": 0, "object": 1, "core": 3})
    _only(verify_dataset_integrity(ds), "dataset.json", "consecutive", "[0, 1, 3]")


def test_empty_channel_names(ds):
    _edit_json(ds, channel_names={})
    assert any("dataset.json" in p and "channel_names" in p for p in verify_dataset_integrity(ds))


def test_empty_raters(ds):
    _edit_json(ds, raters=[])
    probs = verify_dataset_integrity(ds)
    assert any("dataset.json" in p and "'raters' must be a non-empty list" in p for p in probs)


def test_unsupported_file_ending(ds):
    _edit_json(ds, file_ending=".jpg")
    _only(verify_dataset_integrity(ds), "dataset.json", "'.jpg' is not supported")


def test_missing_channel_file(ds):
    _edit_json(ds, channel_names={"0": "toy", "1": "other"})
    probs = verify_dataset_integrity(ds)
    assert len(probs) == 4  # one per case
    assert all("_0001.nii.gz" in p and "missing channel 1" in p for p in probs)
    assert any("toy_002_0001.nii.gz" in p for p in probs)


def test_label_geometry_mismatch(ds):
    lab = ds / "labelsTr" / "rater1_erode" / "toy_001.nii.gz"
    img = sitk.ReadImage(str(lab))
    img.SetSpacing((1.5, 1.0))
    sitk.WriteImage(img, str(lab))
    msg = _only(verify_dataset_integrity(ds), "rater1_erode/toy_001.nii.gz", "spacing")
    assert "size" not in msg.split("(")[1]  # only spacing differs
    write_label_array(np.zeros((32, 30), np.uint8), lab)
    _only(verify_dataset_integrity(ds), "rater1_erode/toy_001.nii.gz", "size")


def test_label_origin_within_tolerance_is_accepted(ds):
    lab = ds / "labelsTr" / "rater0_dilate" / "toy_000.nii.gz"
    img = sitk.ReadImage(str(lab))
    img.SetOrigin((1e-5, 0.0))
    sitk.WriteImage(img, str(lab))
    assert verify_dataset_integrity(ds) == []
    img.SetOrigin((0.5, 0.0))
    sitk.WriteImage(img, str(lab))
    _only(verify_dataset_integrity(ds), "rater0_dilate/toy_000.nii.gz", "origin")


def test_label_values_outside_labels(ds):
    seg = np.zeros((32, 32), np.uint8)
    seg[3:5, 3:5] = 5
    write_label_array(seg, ds / "labelsTr" / "rater0_dilate" / "toy_003.nii.gz")
    _only(verify_dataset_integrity(ds), "rater0_dilate/toy_003.nii.gz", "[5]")


def _nrrd_dataset(folder: Path, num_cases: int) -> Path:
    """Tiny .nrrd dataset (SimpleITK's NIfTI reader turns NaN into 0, NRRD keeps it)."""
    rng = np.random.default_rng(0)
    for i in range(num_cases):
        write_image_array(rng.normal(size=(8, 8)).astype(np.float32), folder / "imagesTr" / f"c{i}_0000.nrrd")
        write_label_array((rng.random((8, 8)) > 0.5).astype(np.uint8), folder / "labelsTr" / "r0" / f"c{i}.nrrd")
    write_dataset_json(folder, DatasetDescription(name="n", channel_names={"0": "MRI"},
                                                  labels={"background": 0, "fg": 1}, raters=["r0"],
                                                  num_training=num_cases, file_ending=".nrrd"))
    return folder


def _put_nan(f: Path, n_inf: int = 0) -> None:
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
    arr[0, 0] = np.nan
    arr[1, 1:1 + n_inf] = np.inf
    write_image_array(arr, f)


def test_nan_in_image(tmp_path):
    ds = _nrrd_dataset(tmp_path / "n", 2)
    assert verify_dataset_integrity(ds) == []
    _put_nan(ds / "imagesTr" / "c1_0000.nrrd", n_inf=1)
    _only(verify_dataset_integrity(ds), "c1_0000.nrrd", "2 NaN/Inf")


def test_extra_rater_folder(ds):
    shutil.copytree(ds / "labelsTr" / "rater0_dilate", ds / "labelsTr" / "rater9")
    _only(verify_dataset_integrity(ds), "labelsTr/rater9", "not listed")


def test_missing_rater_folder(ds):
    shutil.rmtree(ds / "labelsTr" / "rater1_erode")
    _only(verify_dataset_integrity(ds), "labelsTr/rater1_erode", "is missing")


def test_case_without_any_rater(ds):
    for r in RATERS:
        (ds / "labelsTr" / r / "toy_002.nii.gz").unlink()
    _only(verify_dataset_integrity(ds), "toy_002_0000.nii.gz", "no label from any rater")


def test_one_missing_rater_is_fine(ds):
    (ds / "labelsTr" / "rater1_erode" / "toy_002.nii.gz").unlink()
    assert verify_dataset_integrity(ds) == []


def test_label_without_image(ds):
    shutil.copy(ds / "labelsTr" / "rater0_dilate" / "toy_000.nii.gz", ds / "labelsTr" / "rater0_dilate" / "ghost.nii.gz")
    _only(verify_dataset_integrity(ds), "rater0_dilate/ghost.nii.gz", "label without image")


def test_stray_files(ds):
    (ds / "imagesTr" / "notes.txt").write_text("x")
    shutil.copy(ds / "imagesTr" / "toy_000_0000.nii.gz", ds / "imagesTr" / "toy_000.nii.gz")
    (ds / "labelsTr" / "rater0_dilate" / "toy_000.png").write_bytes(b"")
    (ds / "labelsTr" / "loose.nii.gz").write_bytes(b"")
    probs = verify_dataset_integrity(ds)
    assert len(probs) == 4, probs
    assert any("imagesTr/notes.txt" in p and "stray" in p for p in probs)
    assert any("imagesTr/toy_000.nii.gz" in p and "<case>_XXXX" in p for p in probs)
    assert any("rater0_dilate/toy_000.png" in p and "stray" in p for p in probs)
    assert any("labelsTr/loose.nii.gz" in p and "stray" in p for p in probs)


def test_unreadable_label_file(ds):
    (ds / "labelsTr" / "rater0_dilate" / "toy_001.nii.gz").write_bytes(b"garbage")
    _only(verify_dataset_integrity(ds), "rater0_dilate/toy_001.nii.gz", "cannot read")


def test_all_problems_reported_and_assert_raises(ds):
    _edit_json(ds, numTraining=9)
    shutil.rmtree(ds / "labelsTr" / "rater1_erode")
    probs = verify_dataset_integrity(ds)
    assert len(probs) == 2
    with pytest.raises(DatasetIntegrityError) as e:
        assert_dataset_integrity(ds)
    assert isinstance(e.value, RuntimeError)
    assert "2 problem(s)" in str(e.value) and probs[0] in str(e.value) and probs[1] in str(e.value)


def test_parallel_gives_same_result(tmp_path):
    ds = _nrrd_dataset(tmp_path / "n", 6)
    (ds / "labelsTr" / "r0" / "c1.nrrd").write_bytes(b"garbage")
    _put_nan(ds / "imagesTr" / "c4_0000.nrrd")
    serial = verify_dataset_integrity(ds, num_processes=1)
    assert len(serial) == 2
    assert verify_dataset_integrity(ds, num_processes=2) == serial


def _rgb_dataset(folder: Path, channel_names: dict) -> Path:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200
    img = sitk.GetImageFromArray(rgb, isVector=True)
    (folder / "imagesTr").mkdir(parents=True)
    sitk.WriteImage(img, str(folder / "imagesTr" / "c1_0000.png"))
    seg = np.zeros((16, 16), np.uint8)
    seg[4:8, 4:8] = 1
    write_label_array(seg, folder / "labelsTr" / "r0" / "c1.png")
    write_dataset_json(folder, DatasetDescription(name="rgb", channel_names=channel_names,
                                                  labels={"background": 0, "cell": 1}, raters=["r0"], num_training=1,
                                                  file_ending=".png"))
    return folder


def test_rgb_png_counts_as_three_channels(tmp_path):
    ok = _rgb_dataset(tmp_path / "a", {"0": "R", "1": "G", "2": "B"})
    assert verify_dataset_integrity(ok) == []
    bad = _rgb_dataset(tmp_path / "b", {"0": "gray"})
    _only(verify_dataset_integrity(bad), "c1_0000.png", "3 channel(s)", "channel_names lists 1")


def test_cli_exit_status(env_folders, _template, capsys):
    good = Path(shutil.copytree(_template, env_folders["raw"] / "Dataset010_Toy"))
    assert main(["-d", "10"]) == 0
    assert "OK" in capsys.readouterr().out
    (good / "labelsTr" / "rater0_dilate" / "toy_001.nii.gz").write_bytes(b"garbage")
    assert main(["-d", "Dataset010_Toy", "-np", "1"]) == 1
    assert "toy_001.nii.gz" in capsys.readouterr().err
    assert main(["-d", "11"]) == 1
    assert "No dataset with id 11" in capsys.readouterr().err
