"""diffoseg_evaluate on a tiny multi-rater folder written here (4x4 nii.gz label maps)."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffoseg_auto.evaluation.completeness import EvaluationIncompleteError
from diffoseg_auto.evaluation.evaluate_entrypoint import EvaluationOptions, evaluate_folder, main
from diffoseg_auto.evaluation.prediction_folder import EvaluationInputError
from diffoseg_auto.io.image_io import write_seg

PROPS = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0], "shape": [4, 4]}


def cols(*idx: int) -> np.ndarray:
    m = np.zeros((4, 4), np.uint8)
    m[:, list(idx)] = 1
    return m


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    raw = tmp_path / "Dataset001_Tiny"
    ref = raw / "labelsTr"
    # rater order comes from dataset.json, not from the sorted folder names
    (raw / "dataset.json").parent.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"raters": ["rb", "ra", "rc"], "labels": {"background": 0, "fg": 1},
                                                  "file_ending": ".nii.gz"}))
    write_seg(cols(0, 1), PROPS, ref / "rb" / "c1.nii.gz")
    write_seg(cols(0, 1, 2, 3), PROPS, ref / "rc" / "c1.nii.gz")  # ra did not annotate c1
    (ref / "ra").mkdir(parents=True)
    for r in ("ra", "rb", "rc"):
        write_seg(cols(2), PROPS, ref / r / "c2.nii.gz")
    pred = tmp_path / "pred"
    write_seg(cols(0, 1), PROPS, pred / "consensus" / "c1.nii.gz")
    (pred / "samples").mkdir()
    np.savez_compressed(pred / "samples" / "c1.npz", samples=np.stack([cols(0, 1), cols(0, 1, 2, 3)]))
    write_seg(cols(0, 1), PROPS, pred / "raters" / "rb" / "c1.nii.gz")
    write_seg(cols(3), PROPS, pred / "raters" / "ra" / "c1.nii.gz")
    write_seg(cols(0), PROPS, pred / "raters" / "rc" / "c1.nii.gz")
    # c2: bit-packed samples only (one sample equal to the raters, one disjoint)
    s2 = np.stack([cols(2), cols(0)])
    np.savez_compressed(pred / "samples" / "c2.npz", packed=np.packbits(s2.ravel()), shape=np.array(s2.shape))
    return ref, pred


def test_evaluate_folder_values(folders):
    ref, pred = folders
    s = evaluate_folder(ref, pred)
    assert s["raters"] == ["rb", "ra", "rc"] and s["num_cases"] == 2 and s["num_classes"] == 2
    c1, c2 = s["per_case"]
    assert c1["case"] == "c1" and c1["num_raters_available"] == 2
    # c1: the samples equal the two available raters -> GED 0, every Dice 1
    assert c1["GED"] == pytest.approx(0.0) and c1["Dice_match"] == 1.0 and c1["Dice_max"] == 1.0
    assert c1["Dice_consensus_majority"] == 1.0  # majority of {cols 0-1, cols 0-3}, ties to background: cols 0-1
    # per rater (strict): rb 1, ra missing, rc: col 0 vs cols 0-3 = 8/20
    assert c1["Dice_rater_strict/0"] == 1.0 and np.isnan(c1["Dice_rater_strict/1"])
    assert c1["Dice_rater_strict/2"] == pytest.approx(0.4)
    assert c1["Dice_rater_strict"] == pytest.approx(0.7)
    # c2: samples {col2, col0} vs three identical raters col2: Dice_max (1 + 0) / 2, Dice_max_reverse 1
    assert c2["Dice_max"] == pytest.approx(0.5) and c2["Dice_max_reverse"] == 1.0
    assert c2["GED"] == pytest.approx(2 * 0.5 - 0.5 - 0.0)
    assert "Dice_consensus_majority" not in c2
    assert s["metrics"]["Dice_max"] == pytest.approx(0.75)
    assert "num_raters_available" not in s["metrics"]
    assert s["metrics"]["Dice_consensus_majority"] == 1.0  # nan-aware: c2 has no consensus
    mat = np.array(s["rater_prompt_dice_matrix"], dtype=float)
    assert mat.shape == (3, 3) and np.all(np.isnan(mat[:, 1])) and mat[2, 2] == pytest.approx(0.4)
    saved = json.loads((pred / "summary.json").read_text())
    assert saved["metrics"]["Dice_max"] == pytest.approx(0.75)
    table = pd.read_csv(pred / "summary_per_case.csv", index_col="case")
    assert table.loc["c2", "Dice_max"] == pytest.approx(0.5)


def test_dpersona_mode_and_output_file(folders, tmp_path):
    ref, pred = folders
    out = tmp_path / "elsewhere" / "s.json"
    s = evaluate_folder(ref, pred, output_file=out, options=EvaluationOptions(mode="dpersona"))
    assert out.is_file() and (out.parent / "summary_per_case.csv").is_file()
    assert s["mode"] == "dpersona"
    # c2: disjoint sample vs raters gets ~1e-10 instead of 0
    assert s["per_case"][1]["Dice_max"] == pytest.approx((1 + 1e-8 / 8) / 2, abs=1e-9)


def test_geometry_mismatch_names_the_file(folders):
    ref, pred = folders
    bad = dict(PROPS, spacing=[2.0, 1.0])
    write_seg(cols(0, 1), bad, pred / "consensus" / "c1.nii.gz")
    with pytest.raises(EvaluationInputError, match=r"consensus/c1\.nii\.gz: geometry \(spacing\)"):
        evaluate_folder(ref, pred)


def test_sample_size_mismatch_names_the_file(folders):
    ref, pred = folders
    np.savez_compressed(pred / "samples" / "c2.npz", samples=np.zeros((2, 5, 4), np.uint8))
    with pytest.raises(EvaluationInputError, match=r"samples/c2\.npz: samples have size \[5, 4\]"):
        evaluate_folder(ref, pred)


def test_missing_references_predictions_and_raters_are_listed(folders, caplog):
    """Issue 14 item 9: the gaps are listed (warning), not scored, and fatal with strict."""
    ref, pred = folders
    write_seg(cols(0), PROPS, pred / "consensus" / "c9.nii.gz")  # a prediction without reference
    write_seg(cols(0), PROPS, ref / "ra" / "c7.nii.gz")  # a reference case nobody predicted
    (pred / "raters" / "r_extra").mkdir(parents=True)  # a predicted rater the reference lacks
    with caplog.at_level(logging.WARNING):
        s = evaluate_folder(ref, pred)
    err = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "no reference for 1 predicted case(s) (not scored): c9" in err
    assert "no prediction for 1 reference case(s): c7" in err and "predicted rater(s) ['r_extra']" in err
    assert s["num_cases"] == 2 and s["missing"] == {"predictions": ["c7"], "references": ["c9"], "raters": ["r_extra"]}
    (pred / "summary.json").unlink()
    with pytest.raises(EvaluationIncompleteError, match="--strict: .*c7") as e:
        evaluate_folder(ref, pred, options=EvaluationOptions(strict=True))
    assert len(str(e.value).splitlines()) == 3  # one line per problem
    assert not (pred / "summary.json").exists()  # nothing scored
    assert (pred / "consensus" / "c9.nii.gz").is_file() and (ref / "ra" / "c7.nii.gz").is_file()  # nothing lost


def test_a_folds_predictions_miss_only_its_own_held_out_cases(folders, caplog):
    """Scored against the whole labelsTr, a fold's prediction folder is missing only the held-out cases it lacks,
    not the training cases (a learning-curve point printed 57 of those for LIDC)."""
    ref, pred = folders
    for case in ("c3", "c4"):  # c3: another fold's case; c4: held out here, not predicted
        write_seg(cols(0), PROPS, ref / "ra" / f"{case}.nii.gz")
    with caplog.at_level(logging.WARNING):
        s = evaluate_folder(ref, pred, expected_cases=["c1", "c2", "c4"])
    err = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "no prediction for 1 reference case(s): c4" in err and "c3" not in err
    assert s["num_cases"] == 2 and s["missing"]["predictions"] == ["c4"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        s = evaluate_folder(ref, pred, expected_cases=["c1", "c2"])
    assert s["missing"]["predictions"] == [] and not any("no prediction" in r.getMessage() for r in caplog.records)


def test_cli(folders, monkeypatch, capsys):
    ref, pred = folders
    monkeypatch.setattr(sys, "argv", ["diffoseg_evaluate", "-ref", str(ref), "-pred", str(pred), "--mode", "strict", "-l", "auto", "-np", "1"])
    main()
    out = capsys.readouterr().out
    assert "Dice_max" in out and "summary.json" in out
    assert json.loads((pred / "summary.json").read_text())["num_cases"] == 2


def test_cli_fold_scores_the_folds_held_out_cases(folders, env_folders, monkeypatch, capsys, caplog):
    """-f FOLD: the README demo predicts fold 0's held-out cases; the evaluation expects those (splits_final.json),
    not the whole labelsTr, so it ends on its table instead of 'no prediction for N reference case(s)'."""
    ref, pred = folders
    write_seg(cols(0), PROPS, ref / "ra" / "c3.nii.gz")  # a training case of fold 0: not predicted, not expected
    splits = env_folders["preprocessed"] / "Dataset001_Tiny" / "splits_final.json"
    splits.parent.mkdir(parents=True)
    splits.write_text(json.dumps([{"train": ["c3"], "val": ["c1", "c2"]}, {"train": ["c1", "c2"], "val": ["c3"]}]))
    with caplog.at_level(logging.WARNING):
        main(["-ref", str(ref), "-pred", str(pred), "-f", "0", "-np", "1", "--strict"])
    assert "Dice_max" in capsys.readouterr().out and not any("no prediction" in r.getMessage() for r in caplog.records)
    assert json.loads((pred / "summary.json").read_text())["missing"]["predictions"] == []
    with caplog.at_level(logging.WARNING):
        main(["-ref", str(ref), "-pred", str(pred), "-f", "1", "-np", "1"])  # fold 1 holds c3 out: reported
    assert any("no prediction for 1 reference case(s): c3" in r.getMessage() for r in caplog.records)
    with pytest.raises(Exception, match=r"Fold 5 is outside the splits in .*splits_final\.json"):
        main(["-ref", str(ref), "-pred", str(pred), "-f", "5", "-np", "1"])
