"""Metric values on tiny masks computed by hand, and the D-Persona reference vectors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from diffoseg_auto.evaluation import metrics as M
from support.shared_data import DOCS

REF_DIR = DOCS


def cols(*idx: int, shape=(4, 4)) -> np.ndarray:
    """A 4x4 mask with the given columns set."""
    m = np.zeros(shape, bool)
    m[:, list(idx)] = True
    return m


def rows(*idx: int, shape=(4, 4)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[list(idx)] = True
    return m


EMPTY = np.zeros((4, 4), bool)


@pytest.mark.parametrize("mode", ["strict", "dpersona"])
def test_identical_masks(mode):
    a = cols(0, 1)[None]
    assert M.dice_matrix(a, a, mode)[0, 0] == pytest.approx(1.0, abs=1e-9)
    assert M.iou_matrix(a, a, mode)[0, 0] == pytest.approx(1.0, abs=1e-8)  # dpersona: 8 / (8 + 1e-8)
    assert M.ged(a, a, mode) == pytest.approx(0.0, abs=1e-8)


def test_disjoint_masks():
    a, b = cols(0)[None], cols(2, 3)[None]  # 4 and 8 pixels, no overlap
    assert M.dice_matrix(a, b)[0, 0] == 0.0
    assert M.iou_matrix(a, b)[0, 0] == 0.0
    assert M.dice_matrix(a, b, "dpersona")[0, 0] == pytest.approx(1e-8 / 12, rel=1e-6)
    assert M.ged(a, b) == pytest.approx(2.0)  # cross distance 1, within distances 0


def test_empty_masks_both_modes():
    e, b = EMPTY[None], cols(0)[None]
    # strict: empty vs empty is identical
    assert M.dice_matrix(e, e)[0, 0] == 1.0
    assert M.iou_matrix(e, e)[0, 0] == 1.0
    assert M.ged(e, e) == 0.0
    # dpersona: Dice smoothing 1e-8 gives 1, IoU gives 0 (the reference quirk)
    assert M.dice_matrix(e, e, "dpersona")[0, 0] == pytest.approx(1.0)
    assert M.iou_matrix(e, e, "dpersona")[0, 0] == 0.0
    assert M.ged(e, e, "dpersona") == pytest.approx(2 * 1 - 1 - 1)
    # empty vs non-empty (4 pixels)
    assert M.dice_matrix(e, b)[0, 0] == 0.0
    assert M.dice_matrix(e, b, "dpersona")[0, 0] == pytest.approx(1e-8 / 4, rel=1e-6)


def test_half_overlap():
    a, b = cols(0, 1)[None], cols(1, 2)[None]  # 8 and 8 pixels, 4 shared
    assert M.dice_matrix(a, b)[0, 0] == pytest.approx(0.5)
    assert M.iou_matrix(a, b)[0, 0] == pytest.approx(1 / 3)


def test_matrix_shape_and_orientation():
    a = np.stack([cols(0), cols(0, 1), EMPTY])
    b = np.stack([cols(0), cols(3)])
    d = M.dice_matrix(a, b)
    assert d.shape == (3, 2)
    np.testing.assert_allclose(d, [[1.0, 0.0], [2 * 4 / 12, 0.0], [0.0, 0.0]])


def test_ged_hand_example():
    # samples {A, B}, raters {A, C}; A = row 0, B = rows 0-1, C = row 1
    A, B, C = rows(0), rows(0, 1), rows(1)
    # cross d: (A,A)=0 (A,C)=1 (B,A)=.5 (B,C)=.5 -> .5; samples: 0,.5,.5,0 -> .25; raters: 0,1,1,0 -> .5
    assert M.ged(np.stack([A, B]), np.stack([A, C])) == pytest.approx(2 * 0.5 - 0.25 - 0.5)


def test_dice_soft_hand_example():
    raters = np.stack([cols(0, 1), cols(0)])  # mean: col0 = 1, col1 = 0.5
    samples = np.stack([cols(0), cols(0)])  # mean: col0 = 1
    # t = .1, .3: raters -> cols 0-1 (8 px) vs col 0 (4 px): 8/12; t = .5 (0.5 is not > 0.5), .7, .9: identical
    assert M.dice_soft(samples, raters) == pytest.approx((2 * 2 / 3 + 3) / 5)


def test_dice_max_and_reverse():
    samples = np.stack([cols(0), cols(0, 1, 2, 3)])
    raters = np.stack([cols(0), cols(0, 1)])
    # dice (samples x raters): [[1, 8/12], [8/20, 16/24]]
    assert M.dice_max(samples, raters) == pytest.approx((1 + 2 / 3) / 2)
    assert M.dice_max_reverse(samples, raters) == pytest.approx((1 + 2 / 3) / 2)
    samples2 = np.stack([cols(0), cols(0)])
    assert M.dice_max(samples2, raters) == pytest.approx(1.0)
    assert M.dice_max_reverse(samples2, raters) == pytest.approx((1 + 8 / 12) / 2)


def test_hungarian_beats_greedy():
    line = lambda *i: np.isin(np.arange(8), i)[None]  # (1, 8) masks
    R1, R2 = line(0, 1, 2, 3), line(2, 3, 4, 5)
    S1, S2 = line(0, 1, 2, 3), line(0, 1)
    # Dice R1-S1 = 1, R1-S2 = 4/6, R2-S1 = 4/8, R2-S2 = 0. Greedy (best pair first): (1 + 0)/2 = .5
    # optimal: R1-S2 + R2-S1 = (2/3 + 1/2) / 2
    got = M.dice_match(np.stack([S1, S2]), np.stack([R1, R2]))
    assert got == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert got > 0.5


def test_missing_rater_is_skipped_not_empty():
    labels = np.stack([cols(0), np.zeros((4, 4), bool), cols(0, 1)]).astype(np.uint8)
    mask = np.array([True, False, True])
    samples = np.stack([cols(0)]).astype(np.uint8)
    res = M.evaluate_case(samples, labels, mask, num_classes=2)
    avail = np.stack([cols(0), cols(0, 1)])
    assert res["Dice_max"] == pytest.approx(1.0)
    assert res["Dice_max_reverse"] == pytest.approx((1 + 8 / 12) / 2)  # an empty rater 1 would add a 0
    assert res["GED"] == pytest.approx(M.ged(samples.astype(bool), avail))
    assert res["GED"] != pytest.approx(M.ged(samples.astype(bool), labels.astype(bool)))
    preds = np.stack([cols(0), cols(3), cols(1)]).astype(np.uint8)
    res = M.evaluate_case(None, labels, mask, 2, rater_predictions=preds)
    assert np.isnan(res["Dice_rater_strict/1"])
    assert res["Dice_rater_strict/0"] == 1.0 and res["Dice_rater_strict/2"] == pytest.approx(8 / 12)
    assert res["Dice_rater_strict"] == pytest.approx((1 + 8 / 12) / 2)
    mat = np.array(res["rater_prompt_dice_matrix"])
    assert np.all(np.isnan(mat[:, 1])) and mat[1, 0] == 0.0 and mat[2, 2] == pytest.approx(8 / 12)
    assert "GED" not in res


def test_per_rater_strict_vs_dpersona_tiling():
    raters = np.stack([cols(0), cols(0, 1)])
    preds = np.stack([cols(0, 1), cols(2)])  # prompt 0 predicted rater 1's mask, prompt 1 is wrong
    mask = np.array([True, True])
    np.testing.assert_allclose(M.per_rater_dice_strict(preds, raters, mask), [8 / 12, 0.0])
    # untiled Hungarian: rater 1 -> pred 0 (Dice 1), rater 0 -> pred 1 (~1e-10)
    np.testing.assert_allclose(M.per_rater_dice_dpersona(preds, raters, mask), [1e-8 / 8, 1.0], atol=1e-9)
    # tiled (official Stage II): every rater takes its best prediction
    np.testing.assert_allclose(M.per_rater_dice_dpersona(preds, raters, mask, tile=True), [8 / 12, 1.0], atol=1e-9)
    res = M.evaluate_case(None, raters.astype(np.uint8), mask, 2, rater_predictions=preds.astype(np.uint8))
    assert res["Dice_rater_dpersona"] == pytest.approx((8 / 12 + 1) / 2)
    assert res["Dice_rater_strict"] == pytest.approx(8 / 12 / 2)


def test_consensus_metrics():
    labels = np.stack([cols(0), cols(0, 1), cols(0, 1, 2)]).astype(np.uint8)  # majority: cols 0-1
    cons = cols(0).astype(np.uint8)
    res = M.evaluate_case(None, labels, np.ones(3, bool), 2, consensus=cons)
    assert res["Dice_consensus_majority"] == pytest.approx(8 / 12)
    # mean: col0 1, col1 2/3, col2 1/3 -> t .1,.3: cols 0-2 (12px) 8/16; t .5: cols 0-1 8/12; t .7, .9: col 0: 1
    assert res["Dice_consensus_soft"] == pytest.approx((0.5 + 0.5 + 2 / 3 + 1 + 1) / 5)


def test_empty_reference_evaluate_case_modes():
    labels = np.stack([EMPTY, EMPTY]).astype(np.uint8)
    samples = np.stack([EMPTY, EMPTY]).astype(np.uint8)
    s = M.evaluate_case(samples, labels, np.ones(2, bool), 2, scoring=M.CaseScoring("strict"))
    d = M.evaluate_case(samples, labels, np.ones(2, bool), 2, scoring=M.CaseScoring("dpersona"))
    assert s["GED"] == 0.0 and s["Dice_max"] == 1.0 and s["Dice_soft"] == 1.0 and s["Dice_match"] == 1.0
    assert d["GED"] == pytest.approx(0.0) and d["Dice_max"] == pytest.approx(1.0)
    # one empty sample against a non-empty rater set
    labels2 = np.stack([cols(0), cols(0)]).astype(np.uint8)
    s2 = M.evaluate_case(np.stack([EMPTY]).astype(np.uint8), labels2, np.ones(2, bool), 2)
    assert s2["Dice_max"] == 0.0 and s2["GED"] == pytest.approx(2.0)


def test_3d_whole_volume():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[:2] = True  # 32 voxels
    b[1] = True  # 16 voxels, all inside a
    assert M.dice_matrix(a[None], b[None])[0, 0] == pytest.approx(2 * 16 / 48)
    assert M.iou_matrix(a[None], b[None])[0, 0] == pytest.approx(0.5)
    res = M.evaluate_case(a[None].astype(np.uint8), np.stack([a, b]).astype(np.uint8), np.ones(2, bool), 2)
    assert res["Dice_max"] == pytest.approx(1.0)
    assert res["Dice_max_reverse"] == pytest.approx((1 + 2 / 3) / 2)
    assert res["GED"] == pytest.approx(2 * 0.25 - 0 - 0.25)  # cross d: 0, .5; raters: 0,.5,.5,0


def test_multiclass_key_naming():
    lab = np.zeros((4, 4), np.uint8)
    lab[:, 0] = 1
    lab[:, 3] = 2
    pred = lab.copy()
    pred[:, 3] = 0  # class 2 missed entirely
    res = M.evaluate_case(pred[None], np.stack([lab, lab]), np.ones(2, bool), num_classes=3, consensus=pred)
    assert res["Dice_max/class_1"] == 1.0 and res["Dice_max/class_2"] == 0.0
    assert res["Dice_max"] == pytest.approx(0.5)
    assert res["Dice_consensus_majority/class_1"] == 1.0
    assert set(k.split("/")[0] for k in res) == {"GED", "Dice_soft", "Dice_max", "Dice_max_reverse", "Dice_match",
                                                  "Dice_consensus_majority", "Dice_consensus_soft"}
    res2 = M.evaluate_case(pred[None], np.stack([lab, lab]), np.ones(2, bool), num_classes=2)
    assert "Dice_max/class_1" not in res2 and "Dice_max" in res2


def test_empty_rater_ged_difference_between_modes():
    # 4 raters of which one is empty, 6 non-empty samples: dpersona counts the empty self pair as distance 1
    d = np.load(REF_DIR / "metric_vectors_dpersona.npz")
    L, S = d["case1_labels"].astype(bool), d["case1_samples"].astype(bool)
    assert M.ged(S, L, "strict") - M.ged(S, L, "dpersona") == pytest.approx(1 / 16, abs=1e-6)


@pytest.mark.parametrize("i", range(6))
def test_dpersona_reference_vectors(i):
    ref = json.loads((REF_DIR / "metric_vectors_dpersona.json").read_text())[i]
    d = np.load(REF_DIR / "metric_vectors_dpersona.npz")
    L, S = d[f"case{i}_labels"].astype(bool), d[f"case{i}_samples"].astype(bool)
    assert M.ged(S, L, "dpersona") == pytest.approx(ref["ged"], abs=1e-6)
    assert M.dice_soft(S, L, "dpersona") == pytest.approx(ref["dice_soft"], abs=1e-6)
    assert M.dice_max(S, L, "dpersona") == pytest.approx(ref["dice_max"], abs=1e-6)
    assert M.dice_max_reverse(S, L, "dpersona") == pytest.approx(ref["dice_max_reverse"], abs=1e-6)
    assert M.dice_match(S, L, "dpersona") == pytest.approx(ref["dice_match"], abs=1e-6)
    np.testing.assert_allclose(M.per_rater_dice_dpersona(S, L, np.ones(len(L), bool)), ref["dice_each"], atol=1e-6)


def test_summarize_nan_aware():
    cases = [{"case": "a", "Dice_max": 1.0, "Dice_rater_strict/1": float("nan"), "rater_prompt_dice_matrix": [[1.0, np.nan]]},
             {"case": "b", "Dice_max": 0.5, "Dice_rater_strict/1": 0.4, "rater_prompt_dice_matrix": [[0.0, 0.6]]}]
    s = M.summarize(cases, ["r0", "r1"], "strict")
    assert s["metrics"]["Dice_max"] == pytest.approx(0.75)
    assert s["metrics_std"]["Dice_max"] == pytest.approx(0.25)
    assert s["metrics"]["Dice_rater_strict/1"] == pytest.approx(0.4)
    np.testing.assert_allclose(s["rater_prompt_dice_matrix"], [[0.5, 0.6]])
    assert s["num_cases"] == 2 and s["raters"] == ["r0", "r1"] and "case" not in s["metrics"]


def test_bad_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown metric mode"):
        M.dice_matrix(cols(0)[None], cols(0)[None], mode="loose")
