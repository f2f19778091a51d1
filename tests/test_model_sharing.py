"""diffoseg_export_model_to_zip / diffoseg_install_pretrained_model_from_zip: a round trip into a fresh results
folder predicts identically; a damaged zip, another plans version or an installed model is one line."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from diffoseg_auto.evaluation.prediction_folder import load_samples_npz
from diffoseg_auto.inference.model_export import MANIFEST, ModelArchiveError, export_main, export_model_to_zip
from diffoseg_auto.inference.model_install import install_main, install_model_from_zip
from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
from diffoseg_auto.io.image_io import SUPPORTED_FILE_ENDINGS, read_seg
from diffoseg_auto.paths import ENV_RESULTS
from diffoseg_auto.plans.plans import save_plans
from diffoseg_auto.utilities.file_ops import save_json
from support.predictor_models import DATASET, tiny_plans, write_model_folder, write_raw_input

FOLDER = f"{DATASET}/DiffOSegTrainer__DiffOSegPlans__2d"
PREDICT = dict(num_samples=3, sampling_steps=2, rater_num_samples=1, save_samples=True, seed=7, device="cpu",
               num_processes_preprocessing=1, num_processes_export=1)


@pytest.fixture
def exported(env_folders, tmp_path):
    """A two-fold model (both stages, with its plans, fingerprint and a validation image) and its zip."""
    folder = write_model_folder(env_folders["results"], tiny_plans(), folds=(0, 1))
    save_plans(tiny_plans(), folder / "plans.json")
    save_json({"toy": True}, folder / "dataset_fingerprint.json")
    (folder / "fold_0" / "stage1" / "validation" / "consensus").mkdir(parents=True)
    (folder / "fold_0" / "stage1" / "validation" / "consensus" / "case0.nii.gz").write_bytes(b"an image")
    zip_file = tmp_path / "model.zip"
    export_main(["-d", DATASET, "-c", "2d", "-f", "0", "1", "-o", str(zip_file)])
    return folder, zip_file


def test_round_trip_predicts_identically_in_a_fresh_results_folder(exported, env_folders, tmp_path, monkeypatch,
                                                                    capsys):
    original, zip_file = exported
    with zipfile.ZipFile(zip_file) as z:
        names = set(z.namelist())
    assert {f"{FOLDER}/{n}" for n in ("plans.json", "dataset.json", "dataset_fingerprint.json",
                                      "fold_0/stage1/checkpoint_final.pth", "fold_1/stage2/checkpoint_final.pth")} <= names
    assert not [n for n in names if n.lower().endswith(SUPPORTED_FILE_ENDINGS)]  # no images
    assert len(names) == 1 + 3 + 2 * 2  # manifest, plan files, 2 folds x 2 stages

    fresh = tmp_path / "elsewhere" / "results"
    fresh.mkdir(parents=True)
    monkeypatch.setenv(ENV_RESULTS, str(fresh))
    install_main([str(zip_file)])
    assert "installed:" in capsys.readouterr().out
    installed = fresh / FOLDER
    assert (installed / "fold_1" / "stage2" / "checkpoint_final.pth").read_bytes() == \
        (original / "fold_1" / "stage2" / "checkpoint_final.pth").read_bytes()

    write_raw_input(tmp_path / "input")
    predict_from_folder(tmp_path / "input", tmp_path / "installed", DATASET, "2d", [0, 1], **PREDICT)
    predict_from_folder(tmp_path / "input", tmp_path / "original", DATASET, "2d", [0, 1], model_folder=original,
                        **PREDICT)
    for case in ("case0", "case1"):
        np.testing.assert_array_equal(load_samples_npz(tmp_path / "installed" / "samples" / f"{case}.npz"),
                                      load_samples_npz(tmp_path / "original" / "samples" / f"{case}.npz"))
        for sub in ("consensus", "raters/r1", "raters/r2"):
            np.testing.assert_array_equal(read_seg(tmp_path / "installed" / sub / f"{case}.nii.gz")[0],
                                          read_seg(tmp_path / "original" / sub / f"{case}.nii.gz")[0])

    with pytest.raises(ModelArchiveError, match="already installed"):
        install_model_from_zip(zip_file)


def _rewrite(zip_file, out, change):
    """A copy of ``zip_file`` whose members pass through ``change(name, bytes) -> bytes | None`` (None: dropped)."""
    with zipfile.ZipFile(zip_file) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = change(name, src.read(name))
            if data is not None:
                dst.writestr(name, data)
    return out


def test_bad_zips_are_one_line(exported, tmp_path, monkeypatch):
    _, zip_file = exported
    monkeypatch.setenv(ENV_RESULTS, str(tmp_path / "fresh"))
    (tmp_path / "fresh").mkdir()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(zip_file.read_bytes()[:2000])
    tampered = _rewrite(zip_file, tmp_path / "tampered.zip",
                        lambda n, b: b + b"x" if n.endswith("fold_0/stage1/checkpoint_final.pth") else b)

    def other_version(name, data):
        if name == MANIFEST or name.endswith("plans.json"):
            d = json.loads(data)
            d["plans_schema_version" if name == MANIFEST else "schema_version"] = 99
            return json.dumps(d).encode()
        return data

    cases = [(truncated, "damaged"), (tampered, "does not match its SHA-256"),
             (_rewrite(zip_file, tmp_path / "other.zip", other_version), "schema_version 99"),
             (_rewrite(zip_file, tmp_path / "bare.zip", lambda n, b: None if n == MANIFEST else b), f"no {MANIFEST}"),
             (tmp_path / "missing.zip", "does not exist")]
    for bad, message in cases:
        with pytest.raises(ModelArchiveError, match=message) as e:
            install_model_from_zip(bad)
        assert "\n" not in str(e.value)
    assert not any((tmp_path / "fresh").iterdir())  # nothing written by a refused zip


def test_export_names_what_is_missing(exported, env_folders, tmp_path):
    with pytest.raises(ModelArchiveError, match="fold 3 was not trained"):
        export_model_to_zip(DATASET, "2d", tmp_path / "m.zip", folds=[0, 3])
    with pytest.raises(ModelArchiveError, match=r"checkpoint_best.pth: missing \(and 3 more\)"):
        export_model_to_zip(DATASET, "2d", tmp_path / "m.zip", checkpoints=["checkpoint_best.pth"])
    with pytest.raises(ModelArchiveError, match="model folder does not exist"):
        export_model_to_zip(DATASET, "3d_fullres", tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists()
