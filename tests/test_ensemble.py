"""diffoseg_ensemble: two diffoseg_predict folders (two folds of a tiny random-weight model) into one that
diffoseg_evaluate scores: pooled samples, averaged probabilities, voted raters; the refusals."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from diffoseg_auto.evaluation.disagreement import case_disagreement
from diffoseg_auto.evaluation.evaluate_entrypoint import EvaluationOptions, evaluate_folder
from diffoseg_auto.evaluation.metrics import majority_vote
from diffoseg_auto.evaluation.prediction_folder import load_samples_npz
from diffoseg_auto.inference.ensemble import EnsembleError, ensemble_folders, main
from diffoseg_auto.inference.export_prediction import mean_one_hot
from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
from diffoseg_auto.inference.prediction_outputs import OutputFolderInUseError
from diffoseg_auto.io.image_io import read_image_file, read_seg, write_seg
from diffoseg_auto.utilities.file_ops import load_json
from support.predictor_models import DATASET, tiny_plans, write_model_folder, write_raw_input

IN_PROCESS = {"num_processes_preprocessing": 1, "num_processes_export": 1, "device": "cpu"}
CASES, RATERS = ["case0", "case1"], ["r1", "r2"]


@pytest.fixture
def two_predictions(env_folders, tmp_path):
    """Folds 0 and 1 of a random-weight model predict the same two images (3 and 2 samples, probabilities saved)."""
    write_model_folder(env_folders["results"], tiny_plans(), folds=(0, 1))
    write_raw_input(tmp_path / "input")
    folders = []
    for fold, n in ((0, 3), (1, 2)):
        out = tmp_path / f"pred_fold{fold}"
        predict_from_folder(tmp_path / "input", out, DATASET, "2d", [fold], num_samples=n, sampling_steps=2,
                            rater_num_samples=1, save_samples=True, save_probabilities=True, seed=fold, **IN_PROCESS)
        folders.append(out)
    return folders


def _probabilities(folder, case):
    with np.load(folder / "consensus" / f"{case}.npz") as z:
        return z["probabilities"].astype(np.float32)


def test_ensemble_pools_samples_averages_probabilities_votes_raters(two_predictions, tmp_path, capsys):
    a, b = two_predictions
    out = tmp_path / "ensemble"
    main(["-i", str(a), str(b), "-o", str(out)])
    assert "ensembled 2 folders, 2 case(s)" in capsys.readouterr().out
    for case in CASES:
        sa, sb = load_samples_npz(a / "samples" / f"{case}.npz"), load_samples_npz(b / "samples" / f"{case}.npz")
        pooled = load_samples_npz(out / "samples" / f"{case}.npz")
        np.testing.assert_array_equal(pooled, np.concatenate([sa, sb]))  # 3 + 2 samples
        mean = (_probabilities(a, case) + _probabilities(b, case)) / 2  # every member counts once
        np.testing.assert_allclose(_probabilities(out, case), mean, atol=1e-3)
        consensus, props = read_seg(out / "consensus" / f"{case}.nii.gz")
        np.testing.assert_array_equal(consensus, np.argmax(mean, 0))
        _, ref_props = read_seg(a / "consensus" / f"{case}.nii.gz")
        assert props["shape"] == ref_props["shape"] and np.allclose(props["spacing"], ref_props["spacing"])
        assert read_image_file(out / "uncertainty" / f"{case}.nii.gz")[0].shape == (1, 20, 28)
        for r in RATERS:
            maps = np.stack([read_seg(f / "raters" / r / f"{case}.nii.gz")[0] for f in (a, b)])
            np.testing.assert_array_equal(read_seg(out / "raters" / r / f"{case}.nii.gz")[0], majority_vote(maps, 2))
        raters = np.stack([read_seg(out / "raters" / r / f"{case}.nii.gz")[0] for r in RATERS])
        written = load_json(out / "disagreement" / f"{case}.json")
        expected = case_disagreement(pooled, raters, 2)
        assert written["sample_disagreement"] == pytest.approx(expected["sample_disagreement"])
        assert written["num_samples"] == 5 and written["num_rater_predictions"] == 2
    settings = load_json(out / "prediction_settings.json")
    assert settings["ensemble_of"] == [str(a.resolve()), str(b.resolve())]
    assert [s["folds"] for s in settings["member_settings"]] == [[0], [1]]

    # diffoseg_evaluate scores the ensemble like any prediction folder (the raters' masks: fold 0's per-rater maps)
    labels = tmp_path / "ref" / "labelsTr"
    for r in RATERS:
        for case in CASES:
            arr, props = read_seg(a / "raters" / r / f"{case}.nii.gz")
            write_seg(arr, props, labels / r / f"{case}.nii.gz")
    summary = evaluate_folder(labels, out, options=EvaluationOptions(raters=RATERS, num_classes=2))
    assert summary["num_cases"] == 2 and 0 <= summary["metrics"]["GED"] <= 2

    with pytest.raises(OutputFolderInUseError):  # an earlier run's files are never mixed with a new one
        ensemble_folders([a, b], out)
    ensemble_folders([a, b], out, overwrite=True)


def test_members_without_samples_or_probabilities(two_predictions, tmp_path, caplog):
    a, b = two_predictions
    bare = tmp_path / "bare"
    shutil.copytree(b, bare)
    shutil.rmtree(bare / "samples")
    for f in (bare / "consensus").glob("*.npz"):
        f.unlink()
    caplog.set_level(logging.WARNING, logger="diffoseg_auto.inference.ensemble")
    out = tmp_path / "ens"
    ensemble_folders([a, bare], out)
    assert not (out / "samples").exists() and not list((out / "consensus").glob("*.npz"))
    assert any("--save_samples" in r.getMessage() for r in caplog.records)
    for case in CASES:  # a member without probabilities counts with the one-hot of its consensus
        consensus_b = read_seg(bare / "consensus" / f"{case}.nii.gz")[0]
        mean = (_probabilities(a, case) + mean_one_hot(consensus_b[None], 2)) / 2
        np.testing.assert_array_equal(read_seg(out / "consensus" / f"{case}.nii.gz")[0], np.argmax(mean, 0))


def test_folders_that_cannot_be_ensembled_are_named(two_predictions, tmp_path):
    a, b = two_predictions
    with pytest.raises(EnsembleError, match="two or more"):
        ensemble_folders([a], tmp_path / "o1")
    with pytest.raises(EnsembleError, match="must differ"):
        ensemble_folders([a, b], a)
    with pytest.raises(EnsembleError, match="does not exist"):
        ensemble_folders([a, tmp_path / "nothing"], tmp_path / "o2")
    fewer = tmp_path / "fewer"
    shutil.copytree(b, fewer)
    for f in fewer.rglob("case1*"):
        f.unlink()
    with pytest.raises(EnsembleError, match=r"fewer: predicts other cases .*missing: \['case1'\]"):
        ensemble_folders([a, fewer], tmp_path / "o3")
    no_raters = tmp_path / "no_raters"
    shutil.copytree(b, no_raters)
    shutil.rmtree(no_raters / "raters")
    with pytest.raises(EnsembleError, match="per-rater predictions for"):
        ensemble_folders([a, no_raters], tmp_path / "o4")
