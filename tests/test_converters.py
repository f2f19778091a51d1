"""Converters: values in = values out, missing raters stay missing, overwrite refusal."""
from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from diffoseg_auto.cli.console import run_command
from dataset_conversion.conversion_utils import ConversionError, TargetExistsError, prepare_target_folder
from dataset_conversion.convert_bubil import convert_bubil
from dataset_conversion.convert_folder import convert_folder
from dataset_conversion.convert_folder import main as folder_main
from dataset_conversion.convert_lidc import convert_lidc, order_by_area
from dataset_conversion.convert_lidc import main as lidc_main
from dataset_conversion.convert_npc170 import convert_npc170
from dataset_conversion.convert_qubiq import convert_qubiq
from diffoseg_auto.dataset.integrity import verify_dataset_integrity
from diffoseg_auto.dataset.raw_dataset import RawDataset
from support.shared_data import DATA

SHARED = DATA
LIDC_NPZ = SHARED / "lidc_subset" / "lidc_subset.npz"
BUBIL = SHARED / "bubil_cells" / "BU-BIL_Dataset1"


def test_prepare_target_refuses_existing_and_clashing_id(env_folders):
    f = prepare_target_folder(3, "A")
    assert f == env_folders["raw"] / "Dataset003_A" and (f / "imagesTr").is_dir()
    with pytest.raises(TargetExistsError, match="--overwrite"):
        prepare_target_folder(3, "A")
    (f / "imagesTr" / "x").write_text("x")
    assert not (prepare_target_folder(3, "A", overwrite=True) / "imagesTr" / "x").exists()
    with pytest.raises(ConversionError, match="already used by"):
        prepare_target_folder(3, "B")


@pytest.mark.slow
@pytest.mark.skipif(not LIDC_NPZ.is_file(), reason="shared LIDC subset not available")
def test_lidc_npz_real_data(env_folders, capsys):
    assert lidc_main(["-i", str(LIDC_NPZ), "-d", "20"]) == 0
    ds = RawDataset(env_folders["raw"] / "Dataset020_LIDC")
    z = np.load(LIDC_NPZ)
    keys = [str(k) for k in z["keys"]]
    assert ds.cases == sorted(keys) and len(ds.cases) == 71 and ds.raters == ["rater0", "rater1", "rater2", "rater3"]
    for i in (0, 17, 70):
        data, segs, mask, props = ds.load_case(keys[i])
        np.testing.assert_array_equal(segs, z["masks"][i])
        np.testing.assert_allclose(data[0], z["images"][i])
        assert mask.all() and props["spacing"] == [1.0, 1.0]
    # empty masks are annotations: every rater has a file for every case
    assert all(ds.rater_mask(c).all() for c in ds.cases)
    assert any(z["masks"][i, k].sum() == 0 for i in range(71) for k in range(4))
    groups = ds.case_groups
    assert len(set(groups.values())) == 59
    for k in keys:
        assert groups[k] == k.split("_slice")[0]
    assert verify_dataset_integrity(ds.folder) == []
    assert run_command("diffoseg_convert_lidc", lidc_main, ["-i", str(LIDC_NPZ), "-d", "20"]) == 1
    assert "--overwrite" in capsys.readouterr().err


def _write_lidc_pickle(path: Path) -> dict:
    rng = np.random.default_rng(0)
    data = {}
    for key in ("p1_slice3", "p1_slice4", "p2_slice1"):
        masks = [np.zeros((8, 8), np.uint8) for _ in range(4)]
        masks[0][:4, :4] = 1  # 16 px
        masks[2][:2, :2] = 1  # 4 px
        masks[3][:3, :3] = 1  # 9 px, masks[1] empty
        data[key] = {"image": rng.random((8, 8)), "masks": masks, "series_uid": "uid_" + key[:2]}
    path.write_bytes(pickle.dumps(data, protocol=3))
    return data


def test_lidc_pickle_and_order_by_area(env_folders, tmp_path):
    data = _write_lidc_pickle(tmp_path / "lidc.pickle")
    ds = RawDataset(convert_lidc(tmp_path / "lidc.pickle", 21))
    assert ds.cases == ["p1_slice3", "p1_slice4", "p2_slice1"]
    _, segs, _, _ = ds.load_case("p2_slice1")
    np.testing.assert_array_equal(segs, np.stack(data["p2_slice1"]["masks"]))
    assert ds.case_groups == {"p1_slice3": "p1", "p1_slice4": "p1", "p2_slice1": "p2"}
    ordered = RawDataset(convert_lidc(tmp_path / "lidc.pickle", 22, name="LIDCsorted", order_raters_by_area=True))
    _, segs, _, _ = ordered.load_case("p1_slice3")
    assert segs.reshape(4, -1).sum(1).tolist() == [0, 4, 9, 16]
    assert ordered.dataset_json["raters_ordered_by_area"] is True


def test_order_by_area_is_stable():
    m = np.zeros((1, 3, 2, 2), np.uint8)
    m[0, 0, 0, 0] = 1
    m[0, 2, 0, 1] = 1
    out = order_by_area(m)
    np.testing.assert_array_equal(out[0, 0], m[0, 1])
    np.testing.assert_array_equal(out[0, 1], m[0, 0])  # ties keep the original order
    np.testing.assert_array_equal(out[0, 2], m[0, 2])


def _h5(path: Path, shape: tuple, value: float, raters: tuple = (1, 2, 3, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for j, s in enumerate(("t1", "t1c", "t2")):
            f[s] = np.full(shape, value + 10 * j, np.float32)
        for k in raters:
            lab = np.zeros(shape, np.uint8)
            lab[..., :k] = 1  # rater k marks k columns
            f[f"label_a{k}"] = lab


def test_npc170_stacks_slices_and_keeps_volumes(env_folders, tmp_path):
    src = tmp_path / "npc"
    for sl in (10, 2, 7):  # unsorted on purpose; 10 sorts after 7 numerically
        _h5(src / "training_2d" / f"P001_{sl}.h5", (6, 5), value=sl, raters=(1, 2, 3) if sl == 7 else (1, 2, 3, 4))
    _h5(src / "validation" / "P900.h5", (3, 6, 5), value=100.0)
    ds = RawDataset(convert_npc170(src, 30, spacing=(3.0, 1.0, 1.0)))
    assert ds.cases == ["P001", "P900"] and ds.num_channels == 3
    data, segs, mask, props = ds.load_case("P001")
    assert data.shape == (3, 3, 6, 5) and props["spacing"] == [3.0, 1.0, 1.0]
    assert data[0, :, 0, 0].tolist() == [2.0, 7.0, 10.0]  # stacked by slice index
    assert data[2, 0, 0, 0] == 22.0  # channel 2 = t2
    assert mask.tolist() == [True, True, True, False]  # rater a4 missed slice 7: not annotated
    assert segs[1, :, 0, :].sum(-1).tolist() == [2, 2, 2]
    data, segs, mask, _ = ds.load_case("P900")
    assert data.shape == (3, 3, 6, 5) and mask.all() and segs[3].sum() == 3 * 6 * 4
    assert ds.case_groups == {"P001": "P001", "P900": "P900"}
    assert verify_dataset_integrity(ds.folder) == []


def test_npc170_bad_slice_name(env_folders, tmp_path):
    _h5(tmp_path / "npc" / "training_2d" / "noslice.h5", (4, 4), 0.0)
    with pytest.raises(ConversionError, match="noslice.h5"):
        convert_npc170(tmp_path / "npc", 31)


@pytest.mark.slow
@pytest.mark.skipif(not BUBIL.is_dir(), reason="shared BU-BIL data not available")
def test_bubil_real_data(env_folders):
    ds = RawDataset(convert_bubil(BUBIL, 40))
    assert len(ds.cases) == 35 and ds.num_raters == 10
    assert ds.raters[0] == "Person1_Amira" and ds.raters[-1] == "Person5_ImageJ"
    assert ds.file_ending == ".png"
    assert all(ds.rater_mask(c).all() for c in ds.cases)
    fractions = []
    for c in ("B01", "B02", "B20"):
        data, segs, mask, _ = ds.load_case(c)
        assert data.shape[0] == 1 and set(np.unique(segs).tolist()) == {0, 1}
        fractions.append(segs.mean())
    assert 0.01 < np.mean(fractions) < 0.10
    # foreground = black pixels of the source mask
    src = sitk.GetArrayFromImage(sitk.ReadImage(str(BUBIL / "ExpertsAnnotations" / "Person1_Amira" / "seg_B01.png")))
    np.testing.assert_array_equal(ds.load_case("B01")[1][0], (src < 128).astype(np.uint8))
    assert verify_dataset_integrity(ds.folder, num_processes=2) == []


def _nii(arr: np.ndarray, path: Path, spacing=(1.0, 1.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def test_qubiq(env_folders, tmp_path):
    src = tmp_path / "qubiq"
    for c in ("case01", "case02"):
        _nii(np.arange(20, dtype=np.float32).reshape(4, 5), src / c / "image.nii.gz", spacing=(0.5, 2.0))
        for r in (1, 2, 3):
            if c == "case02" and r == 3:
                continue
            _nii((np.arange(20).reshape(4, 5) >= 5 * r).astype(np.float32), src / c / f"task01_seg{r:02d}.nii.gz")
        _nii(np.ones((4, 5), np.uint8), src / c / "task02_seg01.nii.gz")
    ds = RawDataset(convert_qubiq(src, 50, "prostate", task="1"))
    assert ds.name == "Dataset050_QUBIQ_prostate" and ds.raters == ["seg01", "seg02", "seg03"]
    data, segs, mask, props = ds.load_case("case02")
    assert mask.tolist() == [True, True, False] and segs[2].sum() == 0
    assert segs[0].sum() == 15 and segs[1].sum() == 10
    assert props["spacing"] == [2.0, 0.5]
    assert ds.labels == {"background": 0, "task01": 1}
    assert verify_dataset_integrity(ds.folder) == []  # labels got the image geometry
    with pytest.raises(ConversionError, match="task07"):
        convert_qubiq(src, 51, "x", task="07")


def _png(arr: np.ndarray, path: Path, vector: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(arr.astype(np.uint8), isVector=vector), str(path))


def test_folder_converter_threshold_invert_missing(env_folders, tmp_path):
    for s in ("a", "b", "c"):
        _png(np.full((6, 7, 3), 50), tmp_path / "img" / f"{s}.png", vector=True)
    dark = np.full((6, 7), 255)
    dark[:2, :3] = 0
    _png(dark, tmp_path / "m1" / "a.png")
    _png(dark, tmp_path / "m1" / "b.png")
    _png(dark, tmp_path / "m2" / "c.png")
    (tmp_path / "m2" / "readme.txt").write_text("ignored")
    assert folder_main(["-i", str(tmp_path / "img"), "-m", str(tmp_path / "m1"), str(tmp_path / "m2"), "-d", "60",
                        "-n", "Cells", "--rater_names", "anna", "bob", "--invert"]) == 0
    ds = RawDataset(env_folders["raw"] / "Dataset060_Cells")
    assert ds.raters == ["anna", "bob"] and ds.num_channels == 3 and ds.file_ending == ".png"
    data, segs, mask, _ = ds.load_case("b")
    assert data.shape == (3, 6, 7) and mask.tolist() == [True, False]
    assert segs[0].sum() == 6 and segs[1].sum() == 0
    assert ds.rater_mask("c").tolist() == [False, True]
    assert verify_dataset_integrity(ds.folder) == []


def test_folder_converter_label_values(env_folders, tmp_path):
    _nii(np.zeros((3, 4), np.float32), tmp_path / "img" / "x.nii.gz")
    lab = np.zeros((3, 4), np.uint8)
    lab[0, 0], lab[1, 1] = 1, 2
    _nii(lab, tmp_path / "m" / "x.nii.gz")
    ds = RawDataset(convert_folder(tmp_path / "img", [tmp_path / "m"], 61, "Multi"))
    assert ds.labels == {"background": 0, "class1": 1, "class2": 2}
    np.testing.assert_array_equal(ds.load_case("x")[1][0], lab)
    _png(np.full((3, 4), 255), tmp_path / "pimg" / "y.png")
    _png(np.where(np.eye(3, 4) > 0, 255, 0), tmp_path / "pm" / "y.png")
    with pytest.raises(ConversionError, match="--foreground_threshold"):
        convert_folder(tmp_path / "pimg", [tmp_path / "pm"], 62, "Bin")
    ds = RawDataset(convert_folder(tmp_path / "pimg", [tmp_path / "pm"], 62, "Bin", foreground_threshold=127))
    assert ds.load_case("y")[1][0].sum() == 3


def _lidc_slices_tree(root: Path) -> dict:
    """Patients 0004 (2 slices), 0005 (1 slice: a test patient), 0010 (nodules 0 and 1: test). Returns slot areas."""
    areas = {}
    for patient, nodules in (("LIDC-IDRI-0004", {0: 2}), ("LIDC-IDRI-0005", {0: 1}), ("LIDC-IDRI-0010", {0: 1, 1: 1})):
        for n, num_slices in nodules.items():
            for k in range(num_slices):
                img = np.full((8, 8), 10 * k + n, np.uint8)
                _png(img, root / patient / f"nodule-{n}" / "images" / f"slice-{k}.png")
                for r in range(4):
                    m = np.zeros((8, 8), np.uint8)
                    m[: 4 - r, :2] = 255  # slot r marks (4 - r) x 2 pixels; slot 3 only 2 rows
                    if r == 2 and k == 1:
                        m[:] = 0  # an unmarked slice: an empty mask, still an annotation
                    _png(m, root / patient / f"nodule-{n}" / f"mask-{r}" / f"slice-{k}.png")
                    areas[(patient, n, k, r)] = int((m > 0).sum())
    return areas


def test_lidc_slices_layout_and_test_split(env_folders, tmp_path):
    areas = _lidc_slices_tree(tmp_path / "LIDC-IDRI-slices")
    (tmp_path / "LIDC-IDRI-slices" / "README.md").write_text("not a patient")
    ds = RawDataset(convert_lidc(tmp_path / "LIDC-IDRI-slices", 60))
    # patients 0005 and 0010 (multiples of 5) are test patients: imagesTs/labelsTs only
    assert ds.cases == ["LIDC-IDRI-0004_nodule0_slice0", "LIDC-IDRI-0004_nodule0_slice1"]
    assert sorted(ds.image_files_by_case("Ts")) == ["LIDC-IDRI-0005_nodule0_slice0", "LIDC-IDRI-0010_nodule0_slice0",
                                                    "LIDC-IDRI-0010_nodule1_slice0"]
    assert ds.dataset_json["numTest"] == 3 and ds.dataset_json["numTraining"] == 2
    assert ds.dataset_json["raters_are_slots"] is True
    assert ds.case_groups == {c: "LIDC-IDRI-0004" for c in ds.cases}
    assert ds.raters == ["rater0", "rater1", "rater2", "rater3"] and ds.file_ending == ".png"
    data, segs, mask, _ = ds.load_case("LIDC-IDRI-0004_nodule0_slice1")
    assert mask.all() and data[0, 0, 0] == 10
    assert [int(s.sum()) for s in segs] == [areas[("LIDC-IDRI-0004", 0, 1, r)] for r in range(4)] == [8, 6, 0, 2]
    ts = ds.folder / "labelsTs" / "rater1" / "LIDC-IDRI-0010_nodule1_slice0.png"
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(ts))).sum() == 6
    assert verify_dataset_integrity(ds.folder) == []
    # --no_test_split keeps every patient in imagesTr; --max_patients takes whole patients in number order
    assert lidc_main(["-i", str(tmp_path / "LIDC-IDRI-slices"), "-d", "61", "--no_test_split", "--max_patients", "2"]) == 0
    sub = RawDataset(env_folders["raw"] / "Dataset061_LIDC")
    assert len(sub.cases) == 3 and not (sub.folder / "imagesTs").exists()
    assert set(sub.case_groups.values()) == {"LIDC-IDRI-0004", "LIDC-IDRI-0005"}


def test_lidc_slices_missing_mask_named(env_folders, tmp_path):
    _lidc_slices_tree(tmp_path / "s")
    (tmp_path / "s" / "LIDC-IDRI-0004" / "nodule-0" / "mask-3" / "slice-1.png").unlink()
    with pytest.raises(ConversionError, match=r"mask-3/slice-1.png: mask file missing"):
        convert_lidc(tmp_path / "s", 62)
    assert not (env_folders["raw"] / "Dataset062_LIDC").exists()


def _bubil_set(images: Path, annotations: Path, stems: list[str], raters: list[str], rgb: bool = False) -> None:
    for i, stem in enumerate(stems):
        img = np.full((5, 6, 3) if rgb else (5, 6), 40 + i)
        _png(img, images / f"{stem}.png", vector=rgb)
        for j, r in enumerate(raters):
            m = np.full((5, 6), 255)
            m[: j % 3 + 1, :2] = 0  # the cell is black
            _png(m, annotations / r / (f"Seg_{stem}.png" if j == 0 else f"seg_{stem}.png"))


def test_bubil_three_sets_one_dataset(env_folders, tmp_path):
    raters = ["Person1_Amira", "Person1_ImageJ", "Person2_Amira"]
    root = tmp_path / "Rabbit"
    _bubil_set(root / "BU-BIL_Dataset1" / "RawImages", root / "BU-BIL_Dataset1" / "ExpertsAnnotations", ["B01"], raters)
    d2 = root / "BU-BIL_Dataset2"
    _bubil_set(d2 / "RawImages", d2 / "ExpertsAnnotations" / "2A", ["P01", "P02"], raters, rgb=True)
    _png(np.zeros((5, 6)), d2 / "RawImages" / "Chian1_01.png")  # a 2B image: not part of 2A
    _bubil_set(root / "BU-BIL_Dataset3" / "RawImages", root / "BU-BIL_Dataset3" / "ExpertsAnnotations", ["m01"], raters)
    (root / "BU-BIL_Dataset3" / "ExpertsAnnotations" / "Person2_Amira" / "seg_m01.png").unlink()
    ds = RawDataset(convert_bubil(root, 63))
    assert ds.cases == ["d1_B01", "d2A_P01", "d2A_P02", "d3_m01"] and ds.raters == raters
    assert ds.dataset_json["case_sources"] == {"d1_B01": "1", "d2A_P01": "2A", "d2A_P02": "2A", "d3_m01": "3"}
    assert ds.case_groups == {c: c for c in ds.cases}  # 5 folds grouped by source image
    data, segs, mask, _ = ds.load_case("d2A_P02")
    assert data.shape == (1, 5, 6) and data[0, 0, 0] == 41  # the RGB image as one gray channel
    assert [int(s.sum()) for s in segs] == [2, 4, 6] and mask.all()
    assert ds.rater_mask("d3_m01").tolist() == [True, True, False]  # a missing mask stays a missing rater
    assert verify_dataset_integrity(ds.folder) == []
    # one set only, and a set whose raters differ is refused with the folder named
    assert RawDataset(convert_bubil(root, 64, sets=("2A",))).cases == ["d2A_P01", "d2A_P02"]
    (root / "BU-BIL_Dataset3" / "ExpertsAnnotations" / "Person9_Amira").mkdir()
    with pytest.raises(ConversionError, match="BU-BIL_Dataset3/ExpertsAnnotations: raters"):
        convert_bubil(root, 65)
