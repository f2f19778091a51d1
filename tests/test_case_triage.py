"""Case triage: the predicted disagreement per case (diffoseg_predict's disagreement/), diffoseg_rank_cases, and the
benchmark hook's Spearman correlation with the raters' own disagreement, on hand-made and tiny predicted folders."""
from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
from diffoseg_auto.evaluation.disagreement import (case_disagreement, folder_disagreement, mean_pairwise_distance,
                                                   true_disagreement)
from diffoseg_auto.evaluation.prediction_folder import EvaluationInputError, load_samples_npz
from diffoseg_auto.evaluation.rank_cases_entrypoint import main as rank_main
from diffoseg_auto.evaluation.rank_cases_entrypoint import rank_cases
from diffoseg_auto.inference.export_prediction import pack_samples
from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
from diffoseg_auto.io.image_io import read_seg, write_image, write_seg
from diffoseg_auto.results_layout import VAL_PREDICTIONS
from diffoseg_auto.utilities.file_ops import load_json, save_json
from support.predictor_models import DATASET, tiny_plans, write_model_folder, write_raw_input

PROPS = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0], "shape": [6, 6]}


def square(lo: int, hi: int) -> np.ndarray:
    m = np.zeros((6, 6), np.uint8)
    m[lo:hi, lo:hi] = 1
    return m


def test_mean_pairwise_distance_by_hand():
    a, b, empty = square(0, 2), square(0, 4), np.zeros((6, 6), np.uint8)  # Dice(a, b) = 2 * 4 / (4 + 16) = 0.4
    assert mean_pairwise_distance(np.stack([a, b]), 2) == pytest.approx(0.6)
    assert mean_pairwise_distance(np.stack([a, b, b]), 2) == pytest.approx((0.6 + 0.6 + 0) / 3)
    assert mean_pairwise_distance(np.stack([empty, empty]), 2) == 0.0  # two empty masks agree
    assert math.isnan(mean_pairwise_distance(a[None], 2)) and math.isnan(mean_pairwise_distance(None, 2))
    three = np.stack([a, 2 * b])  # class 1: Dice 0 (a vs nothing), class 2: Dice 0 -> distance 1 for both
    assert mean_pairwise_distance(three, 3) == pytest.approx(1.0)
    labels, mask = np.stack([a, b, empty]), np.array([True, True, False])  # rater 3 did not annotate
    assert true_disagreement(labels, mask, 2) == pytest.approx(0.6)
    got = case_disagreement(np.stack([a, a]), np.stack([a, b]), 2)
    assert got == {"sample_disagreement": 0.0, "rater_spread": pytest.approx(0.6), "num_samples": 2,
                   "num_rater_predictions": 2}


def test_predict_writes_the_disagreement_and_rank_cases_orders_by_it(env_folders, tmp_path, capsys):
    write_model_folder(env_folders["results"], tiny_plans())
    write_raw_input(tmp_path / "input", n_cases=3)
    out = tmp_path / "pred"
    predict_from_folder(tmp_path / "input", out, DATASET, "2d", [0], num_samples=4, sampling_steps=2,
                        rater_num_samples=1, save_samples=True, device="cpu", num_processes_preprocessing=1,
                        num_processes_export=1)
    for case in ("case0", "case1", "case2"):
        written = load_json(out / "disagreement" / f"{case}.json")
        assert written["num_samples"] == 4 and written["num_rater_predictions"] == 2
        # written in the prediction's geometry; recomputed from the exported files it is close (resampling only)
        exported = case_disagreement(load_samples_npz(out / "samples" / f"{case}.npz"),
                                     np.stack([read_seg(out / "raters" / r / f"{case}.nii.gz")[0] for r in ("r1", "r2")]), 2)
        for m in ("sample_disagreement", "rater_spread"):
            assert 0 <= written[m] <= 1 and written[m] == pytest.approx(exported[m], abs=0.1)
    rank_main(["-i", str(out), "-o", str(tmp_path / "ranking.csv")])
    assert "written:" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "ranking.csv")
    assert list(table["rank"]) == [1, 2, 3] and table["sample_disagreement"].is_monotonic_decreasing
    # --continue_prediction counts the disagreement file among a finished case's files
    (out / "disagreement" / "case1.json").unlink()
    predict_from_folder(tmp_path / "input", out, DATASET, "2d", [0], num_samples=4, sampling_steps=2,
                        rater_num_samples=1, save_samples=True, device="cpu", num_processes_preprocessing=1,
                        num_processes_export=1, continue_prediction=True)
    assert (out / "disagreement" / "case1.json").is_file()


def _write_prediction(folder: Path, case: str, samples: np.ndarray | None, raters: dict[str, np.ndarray] | None):
    if samples is not None:
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        np.savez(folder / "samples" / f"{case}.npz", **pack_samples(samples, 2))
    for r, m in (raters or {}).items():
        write_seg(m, PROPS, folder / "raters" / r / f"{case}.nii.gz")


def test_rank_cases_computes_from_samples_and_refuses_what_it_cannot_rank(tmp_path):
    folder = tmp_path / "pred"
    _write_prediction(folder, "calm", np.stack([square(0, 3)] * 3), None)
    _write_prediction(folder, "torn", np.stack([square(0, 2), square(0, 4), square(1, 5)]), None)
    _write_prediction(folder, "one", square(0, 3)[None], None)  # one sample: no disagreement, ranked last
    table = rank_cases(folder, tmp_path / "r.csv")
    assert list(table["case"]) == ["torn", "calm", "one"] and table["sample_disagreement"].iloc[1] == 0.0
    assert math.isnan(table["sample_disagreement"].iloc[2])
    with pytest.raises(EvaluationInputError, match="no case has a rater_spread"):
        rank_cases(folder, tmp_path / "r.csv", by="rater_spread")
    with pytest.raises(EvaluationInputError, match="does not exist"):
        rank_cases(tmp_path / "nothing", tmp_path / "r.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationInputError, match="no disagreement"):
        rank_cases(tmp_path / "empty", tmp_path / "r.csv")
    save_json({"oops": 1}, folder / "disagreement" / "calm.json")
    with pytest.raises(EvaluationInputError, match="calm.json: not a disagreement file"):
        folder_disagreement(folder)


def _triage_module():
    return importlib.import_module("benchmarks.quality.triage")


def test_triage_benchmark_correlates_predicted_with_true_disagreement(env_folders, tmp_path):
    """Four cases whose raters disagree more and more; 'Good' samples disagree in the same order, 'Bad' in the
    reverse order, the multi-head U-Net (per-rater predictions only) in the same order: rho 1, -1, 1."""
    ds = "Dataset004_Triage"
    raw = env_folders["raw"] / ds
    write_dataset_json(raw, DatasetDescription(name="Triage", channel_names={0: "CT"},
                                               labels={"background": 0, "fg": 1}, raters=["a", "b"], num_training=4,
                                               file_ending=".nii.gz"))
    spread = {"c1": 3, "c2": 4, "c3": 5, "c4": 6}  # rater b's square grows: the raters agree less and less
    for case, hi in spread.items():
        write_image(np.zeros((6, 6), np.float32), PROPS, raw / "imagesTr" / f"{case}_0000.nii.gz")
        write_seg(square(0, 2), PROPS, raw / "labelsTr" / "a" / f"{case}.nii.gz")
        write_seg(square(0, hi), PROPS, raw / "labelsTr" / "b" / f"{case}.nii.gz")
    splits = [{"train": ["c3", "c4"], "val": ["c1", "c2"]}, {"train": ["c1", "c2"], "val": ["c3", "c4"]}]
    save_json(splits, env_folders["preprocessed"] / ds / "splits_final.json")
    reverse = dict(zip(spread, reversed(spread.values())))
    for trainer, hi_of, kind in (("GoodTrainer", spread, "samples"), ("BadTrainer", reverse, "samples"),
                                 ("MultiHeadUNetTrainer", spread, "raters")):
        for fold, split in enumerate(splits):
            out = env_folders["results"] / ds / f"{trainer}__DiffOSegPlans__2d" / f"fold_{fold}" / VAL_PREDICTIONS
            for case in split["val"]:
                maps = np.stack([square(0, 2), square(0, hi_of[case])])
                _write_prediction(out, case, maps if kind == "samples" else None,
                                  dict(zip(("a", "b"), maps)) if kind == "raters" else None)
                write_seg(maps[0], PROPS, out / "consensus" / f"{case}.nii.gz")
    triage = _triage_module()
    triage.main(["-d", ds, "-c", "2d", "-f", "0", "1", "-tr", "GoodTrainer", "BadTrainer", "MultiHeadUNetTrainer",
                 "--tuning_fold", "0", "--out", str(tmp_path / "triage")])
    table = pd.read_csv(tmp_path / "triage" / "triage.csv", dtype={"fold": str})
    pooled = table[table["fold"] == "all"].set_index(["method", "measure"])
    assert pooled.loc[("Good", "sample_disagreement"), "spearman"] == pytest.approx(1.0)
    assert pooled.loc[("Bad", "sample_disagreement"), "spearman"] == pytest.approx(-1.0)
    assert pooled.loc[("MultiHeadUNet", "rater_spread"), "spearman"] == pytest.approx(1.0)
    assert np.isnan(pooled.loc[("MultiHeadUNet", "sample_disagreement"), "spearman"])  # no samples: no number
    assert (pooled["num_cases"].loc[[("Good", "sample_disagreement")]] == 4).all()
    per_fold = table[table["fold"] == "0"]  # two cases per fold: too few for a correlation
    assert per_fold["spearman"].isna().all() and set(per_fold["num_cases"]) == {2}
    md = (tmp_path / "triage" / "triage.md").read_text()
    assert "0 (tuning)" in md and "rater_spread (headline)" in md
