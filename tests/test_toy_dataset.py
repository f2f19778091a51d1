"""Toy dataset generator: rater styles, missing annotations, determinism, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from diffoseg_auto.cli.console import run_command
from dataset_conversion.generate_toy_dataset import generate_toy_dataset, main, rater_styles
from diffoseg_auto.dataset.raw_dataset import RawDataset


@pytest.fixture(scope="module")
def toy2d(tmp_path_factory):
    return RawDataset(generate_toy_dataset(tmp_path_factory.mktemp("toy") / "Dataset001_Toy2D", dim=2, num_cases=20, seed=0))


def _all_cases(ds: RawDataset):
    return {c: ds.load_case(c) for c in ds.cases}


def test_layout_and_dataset_json(toy2d):
    dj = toy2d.dataset_json
    assert dj["raters"] == ["rater0_dilate", "rater1_erode", "rater2_smooth", "rater3_miss_small"]
    assert dj["numTraining"] == 20 and dj["labels"] == {"background": 0, "object": 1}
    assert toy2d.cases == [f"toy_{i:03d}" for i in range(20)]
    assert sorted(p.name for p in (toy2d.folder / "labelsTr").iterdir()) == dj["raters"]
    # pairs of cases form one patient
    assert dj["case_groups"]["toy_000"] == dj["case_groups"]["toy_001"] == "patient_000"
    assert dj["case_groups"]["toy_002"] == "patient_001"
    data, segs, mask, props = toy2d.load_case("toy_000")
    assert data.shape == (1, 64, 64) and data.dtype == np.float32 and segs.shape == (4, 64, 64)
    assert props["spacing"] == [1.0, 1.0]
    assert set(np.unique(segs)) <= {0, 1}


def test_rater_styles_are_systematic(toy2d):
    fewer_components = 0
    for case, (data, segs, mask, _) in _all_cases(toy2d).items():
        assert mask[0] and mask[1] and mask[2], case
        dil, ero = segs[0] > 0, segs[1] > 0
        assert dil.sum() > ero.sum(), case
        assert not (ero & ~dil).any(), case  # eroded mask lies inside the dilated one
        # the smoothed mask sits between erosion and dilation in size
        assert ero.sum() < (segs[2] > 0).sum() < dil.sum(), case
        if mask[3]:
            assert not ((segs[3] > 0) & ~dil).any(), case
            fewer_components += ndimage.label(segs[3])[1] < ndimage.label(segs[2])[1]
        # objects are brighter than background
        assert data[0][dil].mean() > data[0][~dil].mean() + 0.3
    assert fewer_components >= 1  # rater3 really skipped small objects somewhere


def test_missing_rater_has_no_file_and_no_invented_mask(toy2d):
    missing = [c for c in toy2d.cases if toy2d.label_file("rater3_miss_small", c) is None]
    assert len(missing) == 3  # round(0.15 * 20)
    for c in missing:
        assert not (toy2d.folder / "labelsTr" / "rater3_miss_small" / f"{c}.nii.gz").exists()
        _, segs, mask, _ = toy2d.load_case(c)
        assert mask.tolist() == [True, True, True, False]
        assert segs[3].sum() == 0
    # only rater3 skips cases
    for r in toy2d.raters[:3]:
        assert all(toy2d.label_file(r, c) is not None for c in toy2d.cases)


def test_deterministic_given_seed(tmp_path):
    a = RawDataset(generate_toy_dataset(tmp_path / "a", num_cases=4, seed=3, image_size=32))
    b = RawDataset(generate_toy_dataset(tmp_path / "b", num_cases=4, seed=3, image_size=32))
    c = RawDataset(generate_toy_dataset(tmp_path / "c", num_cases=4, seed=4, image_size=32))
    for case in a.cases:
        da, sa, ma, _ = a.load_case(case)
        db, sb, mb, _ = b.load_case(case)
        np.testing.assert_array_equal(da, db)
        np.testing.assert_array_equal(sa, sb)
        np.testing.assert_array_equal(ma, mb)
    assert not np.array_equal(a.load_case("toy_000")[0], c.load_case("toy_000")[0])


def test_rater_count_cycles_styles():
    names = [s.name for s in rater_styles(6)]
    assert names == ["rater0_dilate", "rater1_erode", "rater2_smooth", "rater3_miss_small", "rater4_dilate", "rater5_erode"]
    s = rater_styles(6)
    assert s[4].strength == 3.0 and s[0].strength == 2.0
    assert [x.name for x in rater_styles(2)] == ["rater0_dilate", "rater1_erode"]


def test_more_raters_stronger_dilation(tmp_path):
    ds = RawDataset(generate_toy_dataset(tmp_path / "t", num_cases=2, num_raters=5, image_size=32))
    for c in ds.cases:
        _, segs, _, _ = ds.load_case(c)
        assert (segs[4] > 0).sum() > (segs[0] > 0).sum()


def test_three_classes_core_inside_object(tmp_path):
    ds = RawDataset(generate_toy_dataset(tmp_path / "t", num_cases=3, num_classes=3))
    assert ds.num_classes == 3
    seen = set()
    for c in ds.cases:
        _, segs, mask, _ = ds.load_case(c)
        for k in np.flatnonzero(mask):
            seen |= set(np.unique(segs[k]).tolist())
        assert (segs[0] == 2).sum() > (segs[1] == 2).sum()  # dilation also applies to the core
    assert seen == {0, 1, 2}


def test_3d_anisotropic(tmp_path):
    ds = RawDataset(generate_toy_dataset(tmp_path / "t", dim=3, num_cases=2, anisotropic=True))
    data, segs, mask, props = ds.load_case("toy_000")
    assert data.shape == (1, 16, 32, 32)
    assert props["spacing"] == [2.0, 1.0, 1.0]
    assert (segs[0] > 0).sum() > (segs[1] > 0).sum() > 0


def test_cli_writes_refuses_and_overwrites(env_folders, capsys):
    assert main(["-d", "7", "--cases", "3", "--size", "32"]) == 0
    folder = env_folders["raw"] / "Dataset007_Toy2D"
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 3
    assert run_command("diffoseg_generate_toy_dataset", main, ["-d", "7", "--cases", "2", "--size", "32"]) == 1
    err = capsys.readouterr().err
    assert "Dataset007_Toy2D" in err and "--overwrite" in err
    assert main(["-d", "7", "--cases", "2", "--size", "32", "--overwrite"]) == 0
    assert RawDataset(folder).cases == ["toy_000", "toy_001"]
    assert main(["-d", "8", "--dim", "3", "--cases", "1"]) == 0
    assert (env_folders["raw"] / "Dataset008_Toy3D" / "imagesTr" / "toy_000_0000.nii.gz").is_file()
