"""RawDataset access, dataset id resolution and environment variable errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dataset_conversion.generate_toy_dataset import generate_toy_dataset
from diffoseg_auto.dataset.dataset_errors import DatasetFormatError
from diffoseg_auto.dataset.raw_dataset import DatasetDescription, RawDataset, open_raw_dataset, write_dataset_json
from diffoseg_auto.paths import EnvironmentVariableNotSetError, preprocessed_root, raw_root, results_root
from diffoseg_auto.utilities.dataset_name_id import DatasetNotFoundError, dataset_name, resolve_dataset_name


@pytest.fixture
def toy(env_folders):
    return RawDataset(generate_toy_dataset(env_folders["raw"] / "Dataset170_Toy", num_cases=8, image_size=32, seed=2))


def test_missing_rater_is_flagged_not_invented(toy):
    missing = [c for c in toy.cases if toy.label_file(3, c) is None]
    assert len(missing) == 1  # round(0.15 * 8)
    case = missing[0]
    data, segs, mask, props = toy.load_case(case)
    assert mask.tolist() == [True, True, True, False]
    assert toy.rater_mask(case).tolist() == [True, True, True, False]
    assert segs.shape == (4, 32, 32) and segs.dtype == np.uint8
    assert segs[3].sum() == 0 and segs[0].sum() > 0
    present = next(c for c in toy.cases if c not in missing)
    assert toy.load_case(present)[2].all()


def test_properties(toy):
    assert toy.num_raters == 4 and toy.num_classes == 2 and toy.num_channels == 1
    assert toy.file_ending == ".nii.gz" and toy.name == "Dataset170_Toy"
    assert toy.case_groups["toy_006"] == toy.case_groups["toy_007"] == "patient_003"


def test_resolve_by_id_and_name(toy, env_folders):
    assert resolve_dataset_name("170") == "Dataset170_Toy"
    assert resolve_dataset_name(170) == "Dataset170_Toy"
    assert resolve_dataset_name("Dataset170_X") == "Dataset170_X"  # a full name is taken as is
    assert open_raw_dataset("170").cases == toy.cases
    assert dataset_name(5, "Abc") == "Dataset005_Abc"


def test_resolve_ambiguous_and_not_found(toy, env_folders):
    (env_folders["preprocessed"] / "Dataset170_Other").mkdir()
    with pytest.raises(DatasetNotFoundError, match="ambiguous") as e:
        resolve_dataset_name("170")
    assert "Dataset170_Other" in str(e.value) and "Dataset170_Toy" in str(e.value)
    with pytest.raises(DatasetNotFoundError, match="No dataset with id 171"):
        resolve_dataset_name("171")
    with pytest.raises(DatasetNotFoundError, match="neither a dataset id"):
        resolve_dataset_name("toy")


def test_env_var_errors_name_the_variable(no_env_folders):
    for fn, var in ((raw_root, "diffoseg_raw"), (preprocessed_root, "diffoseg_preprocessed"),
                    (results_root, "diffoseg_results")):
        with pytest.raises(EnvironmentVariableNotSetError, match=f"'{var}'"):
            fn()
    with pytest.raises(EnvironmentVariableNotSetError, match="diffoseg_raw"):
        open_raw_dataset("Dataset001_X")
    with pytest.raises(DatasetNotFoundError, match="set diffoseg_raw"):
        resolve_dataset_name("1")


def test_missing_dataset_json_and_field(tmp_path):
    with pytest.raises(DatasetFormatError, match="dataset.json"):
        RawDataset(tmp_path)
    (tmp_path / "dataset.json").write_text('{"name": "x"}')
    with pytest.raises(DatasetFormatError, match="raters"):
        RawDataset(tmp_path)


def test_case_image_files_match_the_listing_without_listing(toy, monkeypatch):
    listed = toy.image_files_by_case("Tr")
    assert all(toy.case_image_files(c) == listed[c] for c in toy.cases)
    listed["toy_003"][0].unlink()
    with pytest.raises(DatasetFormatError, match=r"case 'toy_003' lacks channel file\(s\) toy_003_0000.nii.gz"):
        toy.load_case("toy_003")
    # reading one case never lists the images folder (a listing per case is quadratic on a large dataset)
    import diffoseg_auto.dataset.raw_dataset as rd

    monkeypatch.setattr(rd, "list_cases", lambda *a, **k: pytest.fail("load_case listed the folder"))
    assert toy.load_case("toy_004")[0].shape == (1, 32, 32)


def test_worker_raw_dataset_parses_once_until_dataset_json_changes(toy):
    import json
    import os

    from diffoseg_auto.dataset.raw_dataset import worker_raw_dataset

    a = worker_raw_dataset(toy.folder)
    assert worker_raw_dataset(str(toy.folder)) is a and a.cases == toy.cases
    dj = json.loads((toy.folder / "dataset.json").read_text())
    dj["raters"] = dj["raters"][:3]
    (toy.folder / "dataset.json").write_text(json.dumps(dj))
    os.utime(toy.folder / "dataset.json", ns=(1, 10**18))  # a new stamp even within one clock tick
    b = worker_raw_dataset(toy.folder)
    assert b is not a and b.num_raters == 3


def test_dataset_description_writes_the_fields_in_order_then_extra(tmp_path):
    # the dataset.json every converter writes: keys in this order, channel keys as strings, empty case_groups left out
    path = write_dataset_json(tmp_path / "D", DatasetDescription(
        name="N", channel_names={0: "CT"}, labels={"background": 0, "fg": 1}, raters=("a", "b"), num_training=2,
        file_ending=".png", case_groups={}, description="d", extra={"numTest": 1, "test_split": "none"}))
    assert path.read_text() == json.dumps({
        "name": "N", "description": "d", "channel_names": {"0": "CT"}, "labels": {"background": 0, "fg": 1},
        "raters": ["a", "b"], "numTraining": 2, "file_ending": ".png", "numTest": 1, "test_split": "none"}, indent=2)
    grouped = DatasetDescription("N", {"0": "CT"}, {"background": 0, "fg": 1}, ["a"], 1, ".png", {"c1": "p1"})
    assert list(grouped.as_json())[-1] == "case_groups" and RawDataset(write_dataset_json(
        tmp_path / "G", grouped).parent).dataset_json == grouped.as_json()
