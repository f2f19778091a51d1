"""Calibration (ECE, Brier) and uncertainty-disagreement NCC on hand-built arrays whose values are
worked out in the comments, the scores of deterministic predictions (ECE and Brier always; Uncertainty_NCC n/a
where the predicted uncertainty is constant), and diffoseg_evaluate."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from diffoseg_auto.evaluation import calibration as C
from diffoseg_auto.evaluation.evaluate_entrypoint import evaluate_folder
from diffoseg_auto.evaluation.figures import plot_reliability
from diffoseg_auto.evaluation.metrics import CaseScoring, evaluate_case, summarize
from diffoseg_auto.io.image_io import write_seg

CALIBRATED = CaseScoring(calibration=True)
PROPS = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0], "shape": [4, 8]}


def cols(*idx: int, width: int = 8) -> np.ndarray:
    m = np.zeros((4, width), np.uint8)
    m[:, list(idx)] = 1
    return m


def case(samples: list[np.ndarray], raters: list[np.ndarray]) -> dict:
    return C.calibration_metrics(np.stack(samples), np.stack(raters))


def test_perfectly_calibrated_case():
    # samples = the raters' masks in another order: p = q on every pixel (col 0: 1, col 1: 3/4, col 2: 1/4)
    raters = [cols(0, 1, 2), cols(0, 1), cols(0), cols(0, 1)]
    got = case([raters[2], raters[3], raters[0], raters[1]], raters)
    assert got["ECE"] == 0.0 and got["Brier"] == 0.0
    assert got["Uncertainty_NCC"] == pytest.approx(1.0)  # u = v
    assert got["soft_output"] is True
    # counted: cols 0-2 marked, band of 2 -> cols 0-4, 4 rows: 20 pixels; p = 1 (4 px), .75 (4), .25 (4), 0 (8)
    bins = got["reliability"]
    assert bins["count"] == [8, 0, 4, 0, 0, 0, 0, 4, 0, 4]
    assert bins["sum_p"][7] == 3.0 and bins["sum_q"][7] == 3.0


def test_calibrated_per_bin_but_not_per_pixel():
    # p = .5 on every pixel; q = .25 and .75 alternately: one bin whose means agree (ECE 0), Brier .0625
    samples = [np.array([[1, 1, 0, 0]]), np.array([[0, 0, 1, 1]])]
    raters = [np.array([[1, 1, 1, 1]]), np.array([[0, 1, 0, 1]]), np.array([[0, 1, 0, 1]]), np.array([[0, 0, 0, 0]])]
    got = case(samples, raters)
    assert got["ECE"] == 0.0 and got["Brier"] == pytest.approx(0.0625)
    assert math.isnan(got["Uncertainty_NCC"])  # q(1-q) = 3/16 everywhere: nothing to localise


def test_overconfident_case():
    # 4 samples: 3 mark cols 0-3, 1 marks cols 0-1 -> p: cols 0-1 1, cols 2-3 .75
    # 2 raters: cols 0-3 and cols 0-1               -> q: cols 0-1 1, cols 2-3 .5
    # counted: cols 0-5 (band 2), 24 px. Bins: p=1: 8 px, p=.75: 8 px (sum p 6, sum q 4), p=0: 8 px
    # ECE = |6 - 4| / 24 = 1/12; Brier = 8 * .25^2 / 24 = 1/48
    # NCC: u = p(1-p) = 3/16 on cols 2-3, v = q(1-q) = 1/4 there, 0 elsewhere: u = .75 v -> 1 (it locates the
    # disagreement, however overconfident)
    got = case([cols(0, 1, 2, 3)] * 3 + [cols(0, 1)], [cols(0, 1, 2, 3), cols(0, 1)])
    assert got["ECE"] == pytest.approx(1 / 12)
    assert got["Brier"] == pytest.approx(1 / 48)
    assert got["Uncertainty_NCC"] == pytest.approx(1.0)
    assert sum(got["reliability"]["count"]) == 24


def test_raters_all_agree():
    # 2 samples: col 0 and cols 0-1 -> p: col 0 1, col 1 .5; both raters col 0 -> q(1-q) = 0 everywhere
    # counted: cols 0-3, 16 px; bins: p=1 (4 px, q 1), p=.5 (4 px, sum p 2, sum q 0), p=0 (8 px)
    # ECE = 2 / 16; Brier = 4 * .25 / 16; NCC undefined: the case is not averaged
    got = case([cols(0), cols(0, 1)], [cols(0), cols(0)])
    assert got["ECE"] == pytest.approx(0.125) and got["Brier"] == pytest.approx(1 / 16)
    assert math.isnan(got["Uncertainty_NCC"])


def test_ncc_value_and_zero_variance_prediction():
    # one row of 4 pixels, all counted. p = [1, .5, .5, .5], q = [1, 1, .5, .5]
    # u = [0, 1/4, 1/4, 1/4], v = [0, 0, 1/4, 1/4]; centred: du = [-3, 1, 1, 1] / 16, dv = [-1, -1, 1, 1] / 8
    # sum du dv = 4/128 = 1/32, sum du^2 = 12/256 = 3/64, sum dv^2 = 1/16 -> NCC = (1/32) / (sqrt(3)/32) = 1/sqrt(3)
    samples = [np.array([[1, 1, 1, 1]]), np.array([[1, 0, 0, 0]])]
    raters = [np.array([[1, 1, 1, 1]]), np.array([[1, 1, 0, 0]])]
    got = case(samples, raters)
    assert got["Uncertainty_NCC"] == pytest.approx(1 / math.sqrt(3))
    # bins: p=1: q 1; p=.5: 3 px, sum p 1.5, sum q 2 -> ECE .5/4; Brier (0 + .25 + 0 + 0) / 4
    assert got["ECE"] == pytest.approx(0.125) and got["Brier"] == pytest.approx(0.0625)
    # identical samples while the raters disagree: the uncertainty map marks nothing -> 0
    flat = case([np.array([[1, 1, 1, 1]])] * 2, raters)
    assert flat["Uncertainty_NCC"] == 0.0 and flat["soft_output"] is False


def test_uncertainty_in_the_wrong_place_is_negative():
    # p = .5 on col 1 only, q = .5 on col 2 only (4x4, all counted): u and v are disjoint bumps,
    # du = [-1, 3, -1, -1] / 16, dv = [-1, -1, 3, -1] / 16 -> NCC = (1 - 3 - 3 + 1) / 12 = -1/3
    got = case([cols(0, width=4), cols(0, 1, width=4)], [cols(2, 3, width=4), cols(3, width=4)])
    assert got["Uncertainty_NCC"] == pytest.approx(-1 / 3)


def test_counted_region_band_and_bin_edges():
    p = np.zeros((9, 9))
    p[4, 4] = 0.5
    assert C.counted_region(p, np.zeros_like(p)).sum() == 25  # 5 x 5 around the pixel
    assert C.counted_region(np.zeros_like(p), np.pad([[1.0]], ((0, 8), (0, 8)))).sum() == 9  # corner: 3 x 3
    assert C.counted_region(p, np.zeros_like(p), band=0).sum() == 1
    vol = np.zeros((5, 5, 5))
    vol[2, 2, 2] = 1
    assert C.counted_region(vol, vol).sum() == 125  # 3D: a 5 x 5 x 5 cube
    # k / N equal to an edge lands in the upper bin; p = 1 in the last bin
    p = np.array([0.0, 1 / 10, 3 / 10, 0.7, 0.999, 1.0])
    assert C.reliability_bins(p, p, np.ones(6, bool))["count"] == [1, 1, 0, 1, 0, 0, 0, 1, 0, 2]
    # nothing marked anywhere: no counted pixel, no number
    empty = case([cols()], [cols(), cols()])
    assert math.isnan(empty["ECE"]) and math.isnan(empty["Brier"]) and math.isnan(empty["Uncertainty_NCC"])


def test_multiclass_foreground_is_any_class():
    # sample 1 has class 1 on col 0, sample 2 class 2 there: both are foreground -> p = 1, as the raters
    s = np.stack([cols(0), 2 * cols(0)])
    r = np.stack([cols(0), 2 * cols(0)])
    got = evaluate_case(s, r, np.ones(2, bool), num_classes=3, scoring=CALIBRATED)
    assert got["ECE"] == 0.0 and got["Brier"] == 0.0 and got["soft_output"] is False
    assert "ECE/class_1" not in got


def test_evaluate_case_adds_calibration_only_when_asked_and_skips_missing_raters():
    labels = np.stack([cols(0), cols(5, 6), cols(0, 1)])  # rater 1 did not annotate: not an empty mask either
    mask = np.array([True, False, True])
    samples = np.stack([cols(0), cols(0, 1)])
    assert "ECE" not in evaluate_case(samples, labels, mask, 2)
    got = evaluate_case(samples, labels, mask, 2, scoring=CALIBRATED)
    assert got["ECE"] == 0.0 and got["Brier"] == 0.0  # p = q over the two annotating raters
    none = evaluate_case(samples, labels, np.zeros(3, bool), 2, scoring=CALIBRATED)
    assert math.isnan(none["ECE"]) and none["reliability"] is None


def test_summary_of_a_deterministic_prediction_scores_its_overconfidence():
    # a deterministic method repeats one map: p is 0 or 1 everywhere. q: col 0 1, col 1 .5; p: col 0 1, col 1 0.
    # counted cols 0-3 (16 px): bin p=0 holds 12 px with sum q 2, bin p=1 4 px with q 1 -> ECE 2/16, Brier 4 x .25 / 16.
    # Its uncertainty p(1-p) is 0 on every pixel of every case: the NCC is undefined -> n/a, never a number
    raters = np.stack([cols(0), cols(0, 1)])
    det = [{"case": c, **evaluate_case(np.stack([cols(0)] * 3), raters, np.ones(2, bool), 2, scoring=CALIBRATED)}
           for c in ("a", "b")]
    s = summarize(det, ["r0", "r1"], "strict")
    assert s["metrics"]["ECE"] == pytest.approx(1 / 8) and s["metrics"]["Brier"] == pytest.approx(1 / 16)
    assert s["metrics"]["Uncertainty_NCC"] == s["metrics_std"]["Uncertainty_NCC"] == "n/a"
    assert all(d["Uncertainty_NCC"] == "n/a" and d["ECE"] == pytest.approx(1 / 8) for d in s["per_case"])
    assert s["reliability"]["count"] == [24, 0, 0, 0, 0, 0, 0, 0, 0, 8] and s["metrics"]["Dice_max"] == 1.0


def test_summary_means_over_disagreeing_cases_and_pools_bins():
    # case a: the overconfident case (NCC 1); case b: its samples collapse (NCC 0, still counted);
    # case c: the raters agree (NCC NaN, not averaged) -> NCC mean 0.5 over a and b
    a = case([cols(0, 1, 2, 3)] * 3 + [cols(0, 1)], [cols(0, 1, 2, 3), cols(0, 1)])
    b = case([cols(0, 1)] * 2, [cols(0, 1, 2, 3), cols(0, 1)])
    c = case([cols(0), cols(0, 1)], [cols(0), cols(0)])
    assert b["Uncertainty_NCC"] == 0.0
    s = summarize([{"case": "a", **a}, {"case": "b", **b}, {"case": "c", **c}], ["r0", "r1"], "strict")
    assert s["metrics"]["Uncertainty_NCC"] == pytest.approx(0.5)
    assert s["metrics"]["ECE"] == pytest.approx((a["ECE"] + b["ECE"] + c["ECE"]) / 3)
    assert s["reliability"]["count"] == np.sum([d["reliability"]["count"] for d in (a, b, c)], 0).tolist()
    assert "soft_output" not in s["metrics"] and "reliability" not in s["metrics"]


def test_plot_reliability(tmp_path):
    bins = case([cols(0, 1, 2, 3)] * 3 + [cols(0, 1)], [cols(0, 1, 2, 3), cols(0, 1)])["reliability"]
    out = tmp_path / "rel.png"
    plot_reliability(bins, out, title="overconfident")
    from matplotlib.image import imread

    img = imread(out)[..., :3]
    assert img.shape[0] > img.shape[1] > 200 and len(np.unique(img.round(2).reshape(-1, 3), axis=0)) > 3


@pytest.fixture
def folders(tmp_path):
    raw = tmp_path / "Dataset001_Cal"
    ref = raw / "labelsTr"
    raw.mkdir()
    (raw / "dataset.json").write_text(json.dumps({"raters": ["a", "b"], "labels": {"background": 0, "fg": 1},
                                                  "file_ending": ".nii.gz"}))
    # c1: raters disagree on cols 2-3; c2: raters agree on col 0
    for r, m in (("a", cols(0, 1, 2, 3)), ("b", cols(0, 1))):
        write_seg(m, PROPS, ref / r / "c1.nii.gz")
    for r in ("a", "b"):
        write_seg(cols(0), PROPS, ref / r / "c2.nii.gz")
    return ref, tmp_path


def _predict(folder, samples_by_case):
    (folder / "samples").mkdir(parents=True)
    for c, s in samples_by_case.items():
        np.savez_compressed(folder / "samples" / f"{c}.npz", samples=np.stack(s))


def test_evaluate_folder_reports_calibration(folders):
    ref, tmp = folders
    pred = tmp / "stochastic"
    # c1: the overconfident case (ECE 1/12, Brier 1/48, NCC 1); c2: the raters-agree case (ECE 1/8, Brier 1/16)
    _predict(pred, {"c1": [cols(0, 1, 2, 3)] * 3 + [cols(0, 1)], "c2": [cols(0), cols(0, 1)]})
    s = evaluate_folder(ref, pred)
    assert s["metrics"]["ECE"] == pytest.approx((1 / 12 + 1 / 8) / 2)
    assert s["metrics"]["Brier"] == pytest.approx((1 / 48 + 1 / 16) / 2)
    assert s["metrics"]["Uncertainty_NCC"] == pytest.approx(1.0)  # c2 is not averaged
    assert s["reliability"]["count"][9] == 8 + 4
    table = pd.read_csv(pred / "summary_per_case.csv", index_col="case")
    assert table.loc["c1", "ECE"] == pytest.approx(1 / 12) and np.isnan(table.loc["c2", "Uncertainty_NCC"])
    assert "reliability" not in table.columns


def test_evaluate_folder_scores_a_deterministic_prediction(folders):
    ref, tmp = folders
    pred = tmp / "deterministic"
    _predict(pred, {"c1": [cols(0, 1, 2)] * 4, "c2": [cols(0)] * 4})
    s = evaluate_folder(ref, pred)
    saved = json.loads((pred / "summary.json").read_text())
    # c1: p = 1 on cols 0-2, q = 1, 1, .5, .5 on cols 0-3; counted cols 0-5 (24 px): bin p=1 12 px, sum q 10;
    # bin p=0 12 px, sum q 2 -> ECE 4/24, Brier (4 + 4) x .25 / 24. c2: p = q -> 0, 0
    assert s["metrics"]["ECE"] == pytest.approx((1 / 6 + 0) / 2) and saved["metrics"]["ECE"] == pytest.approx(1 / 12)
    assert s["metrics"]["Brier"] == pytest.approx((1 / 12 + 0) / 2)
    assert s["metrics"]["Uncertainty_NCC"] == saved["metrics"]["Uncertainty_NCC"] == "n/a"
    # written as "n/a" (which pandas' read_csv reads back as NaN unless told otherwise)
    table = pd.read_csv(pred / "summary_per_case.csv", index_col="case", keep_default_na=False)
    assert table.loc["c1", "Uncertainty_NCC"] == "n/a" and float(table.loc["c1", "ECE"]) == pytest.approx(1 / 6)
    # the other metrics are scored as always: c1's best rater is cols 0-3 (Dice 24/28), c2 matches (1)
    assert s["metrics"]["Dice_max"] == pytest.approx((24 / 28 + 1) / 2)


def test_a_deterministic_prediction_with_its_softmax_is_scored_on_the_softmax(folders):
    """A deterministic baseline's labels are not probabilities, but its softmax is (consensus/<case>.npz, written
    by diffoseg_predict --save_probabilities): calibration reads p from it instead of reporting n/a."""
    ref, tmp = folders
    pred = tmp / "softmax"
    _predict(pred, {"c1": [cols(0, 1, 2)] * 4, "c2": [cols(0)] * 4})
    (pred / "consensus").mkdir()
    for c, p in (("c1", cols(0, 1) + 0.5 * cols(2, 3)), ("c2", 0.75 * cols(0))):
        np.savez_compressed(pred / "consensus" / f"{c}.npz", probabilities=np.stack([1 - p, p]).astype(np.float16))
    s = evaluate_folder(ref, pred)
    # c1: p equals the raters' fraction (1, 1, .5, .5 on cols 0-3): ECE 0, Brier 0, NCC 1.
    # c2: cols 0-2 counted (12 px), p .75 against q 1 on col 0: ECE |3 - 4| / 12, Brier 4 x .0625 / 12, NCC NaN
    assert s["metrics"]["ECE"] == pytest.approx((0 + 1 / 12) / 2)
    assert s["metrics"]["Brier"] == pytest.approx((0 + 1 / 48) / 2)
    assert s["metrics"]["Uncertainty_NCC"] == pytest.approx(1.0)
    bad = tmp / "bad"
    _predict(bad, {"c1": [cols(0)] * 2})
    (bad / "consensus").mkdir()
    np.savez_compressed(bad / "consensus" / "c1.npz", probabilities=np.zeros((2, 3, 3), np.float16))
    with pytest.raises(Exception, match=r"c1.npz: probabilities have shape \[2, 3, 3\]"):
        evaluate_folder(ref, bad)


def test_the_saved_softmax_is_read_only_where_the_samples_do_not_disagree(folders):
    """Samples with a spread of their own are the prediction's p: their consensus/<case>.npz is not even read (a
    broken one does not stop the evaluation), while samples repeating one map read it."""
    from diffoseg_auto.evaluation.calibration import samples_disagree

    assert samples_disagree(np.stack([cols(0), cols(0, 1)])) and not samples_disagree(np.stack([cols(0)] * 3))
    ref, tmp = folders
    pred = tmp / "spread"
    _predict(pred, {"c1": [cols(0), cols(0, 1)], "c2": [cols(0)] * 2})
    (pred / "consensus").mkdir()
    for c in ("c1", "c2"):  # the wrong shape: an error wherever it is read
        np.savez_compressed(pred / "consensus" / f"{c}.npz", probabilities=np.zeros((2, 3, 3), np.float16))
    with pytest.raises(Exception, match=r"c2.npz: probabilities have shape"):
        evaluate_folder(ref, pred)
    (pred / "consensus" / "c2.npz").unlink()
    s = evaluate_folder(ref, pred)  # c1's broken file is never read: the same scores as without it
    plain = tmp / "plain"
    _predict(plain, {"c1": [cols(0), cols(0, 1)], "c2": [cols(0)] * 2})
    assert s["metrics"] == evaluate_folder(ref, plain)["metrics"]
    assert s["metrics"]["ECE"] == pytest.approx(evaluate_folder(ref, plain)["metrics"]["ECE"])


def test_raters_own_masks_are_calibrated_and_one_rater_repeated_is_not(folders, tmp_path):
    """The proof of issue 33: samples that are the raters' own masks score ECE 0 and NCC 1; samples that repeat
    one rater are overconfident (ECE clearly above 0, Brier a number, reliability bins off the diagonal) and have
    a constant uncertainty, so their NCC is n/a."""
    ref, tmp = folders
    own, one = tmp / "own", tmp / "one"
    _predict(own, {"c1": [cols(0, 1, 2, 3), cols(0, 1)], "c2": [cols(0), cols(0)]})
    _predict(one, {"c1": [cols(0, 1, 2, 3)] * 4, "c2": [cols(0)] * 4})
    s_own, s_one = evaluate_folder(ref, own), evaluate_folder(ref, one)
    assert s_own["metrics"]["ECE"] == pytest.approx(0) and s_own["metrics"]["Brier"] == pytest.approx(0)
    assert s_own["metrics"]["Uncertainty_NCC"] == pytest.approx(1.0)
    # c1: p = 1 on cols 0-3 where q is 1, 1, .5, .5; counted cols 0-5 (24 px): |16 - 12| / 24, 8 x .25 / 24; c2: 0
    assert s_one["metrics"]["ECE"] == pytest.approx(1 / 12) and s_one["metrics"]["ECE"] > 0.05
    assert s_one["metrics"]["Brier"] == pytest.approx(1 / 24)
    assert s_one["metrics"]["Uncertainty_NCC"] == "n/a"
    p_mean, q_mean, _ = C.bin_means(s_one["reliability"])
    assert p_mean[9] == 1.0 and q_mean[9] == pytest.approx((12 + 4) / (16 + 4))  # the last bin lies below the diagonal
    plot_reliability(s_one["reliability"], tmp_path / "one.png", title="one rater repeated")
    assert (tmp_path / "one.png").is_file()


def test_a_prediction_without_samples_is_scored_on_its_consensus(folders):
    """diffoseg_predict without --save_samples writes consensus label maps only: they are the prediction (0/1)."""
    ref, tmp = folders
    pred = tmp / "consensus_only"
    for c, m in (("c1", cols(0, 1, 2, 3)), ("c2", cols(0))):
        write_seg(m, PROPS, pred / "consensus" / f"{c}.nii.gz")
    s = evaluate_folder(ref, pred)
    assert s["metrics"]["ECE"] == pytest.approx(1 / 12) and s["metrics"]["Brier"] == pytest.approx(1 / 24)
    assert s["metrics"]["Uncertainty_NCC"] == "n/a"
