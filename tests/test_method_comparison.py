"""diffoseg_benchmark -tr A B: the methods x metrics table on a hand-built dataset whose metric values
are computed here independently (strict mode), with the trivial and inter-rater rows."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
from diffoseg_auto.evaluation.benchmark_entrypoint import main
from diffoseg_auto.evaluation.comparison_report import compare_methods
from diffoseg_auto.evaluation.method_comparison import (AREA_SPEARMAN, EMPTY, INTER_RATER, MAJORITY, MAJORITY_DICE,
                                                        STAPLE)
from diffoseg_auto.results_layout import VAL_PREDICTIONS
from diffoseg_auto.io.image_io import write_image, write_seg
from diffoseg_auto.utilities.file_ops import save_json

DS = "Dataset003_Cmp"
PROPS = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0], "shape": [4, 4]}
RATERS = ["a", "b", "c"]
SPLITS = [{"train": ["c3", "c4"], "val": ["c1", "c2"]}, {"train": ["c1", "c2"], "val": ["c3", "c4"]}]


def cols(*idx: int) -> np.ndarray:
    m = np.zeros((4, 4), np.uint8)
    m[:, list(idx)] = 1
    return m


LABELS = {"c1": {"a": cols(0, 1), "b": cols(0), "c": cols(0, 1, 2)},
          "c2": {"a": cols(3), "b": cols(2, 3)},  # rater c did not annotate c2
          "c3": {"a": cols(1), "b": cols(1, 2), "c": cols(2)},
          "c4": {"a": cols(0), "b": cols(), "c": cols(0)}}
# method A: two samples and a per-rater prediction; method B: samples only (no raters/ folder)
METHODS = {"FakeATrainer": (np.stack([cols(0), cols(0, 1)]), {"a": cols(0, 1), "b": cols(0), "c": cols(0)}),
           "FakeBTrainer": (np.stack([cols(), cols(3)]), None)}
CONSENSUS = {"FakeATrainer": cols(0)}  # method A's consensus label map (consensus/), B has none


# ---- independent strict-mode definitions
def iou(x, y):
    u = np.logical_or(x, y).sum()
    return 1.0 if u == 0 else np.logical_and(x, y).sum() / u


def dice(x, y):
    s = x.sum() + y.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(x, y).sum() / s


def ged(S, R):
    mean_d = lambda A, B: np.mean([1 - iou(x, y) for x in A for y in B])
    return 2 * mean_d(S, R) - mean_d(S, S) - mean_d(R, R)


def dice_soft(S, R):
    return np.mean([dice(np.mean(S, 0) > t, np.mean(R, 0) > t) for t in (0.1, 0.3, 0.5, 0.7, 0.9)])


def majority(R):
    return (np.sum(R, 0) * 2 > len(R)).astype(np.uint8)  # binary: ties -> background


def staple_by_sitk(R):
    """SimpleITK's STAPLE filter called directly: foreground where its probability exceeds 0.5."""
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    return (sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(r) for r in R])) > 0.5).astype(np.uint8)


def expected(row: str, metric: str) -> tuple[float, float]:
    """Mean and std (ddof 1) over the two folds of the per-fold mean over cases."""
    per_fold = []
    for split in SPLITS:
        vals = []
        for case in split["val"]:
            names = list(LABELS[case])
            R = np.stack([LABELS[case][r] for r in names])
            if row == INTER_RATER:
                S_and_refs = [(R[k:k + 1], np.delete(R, k, 0)) for k in range(len(R))]
                vals.append(np.mean([ged(s, o) if metric == "GED" else dice_soft(s, o) for s, o in S_and_refs]))
                continue
            if row in METHODS:
                S, per_rater = METHODS[row]
            else:
                m = (np.zeros((4, 4), np.uint8) if row == EMPTY else staple_by_sitk(R) if row == STAPLE
                     else majority(R))
                S, per_rater = np.stack([m] * 3), {r: m for r in RATERS}
            if metric == "GED":
                vals.append(ged(S, R))
            elif metric == "Dice_soft":
                vals.append(dice_soft(S, R))
            else:
                vals.append(np.mean([dice(per_rater[r], LABELS[case][r]) for r in names]))
        per_fold.append(np.mean(vals))
    return float(np.mean(per_fold)), float(np.std(per_fold, ddof=1))


def spearman_by_hand(x: list[float], y: list[float]) -> float:
    """Pearson correlation of average ranks (ties share the mean of their positions)."""
    def ranks(v):
        v = np.asarray(v, float)
        return np.array([np.mean([i + 1 for i, w in enumerate(sorted(v)) if w == u]) for u in v])
    rx, ry = ranks(x) - ranks(x).mean(), ranks(y) - ranks(y).mean()
    return float((rx * ry).sum() / np.sqrt((rx ** 2).sum() * (ry ** 2).sum()))


@pytest.fixture
def comparison_data(env_folders):
    raw = env_folders["raw"] / DS
    write_dataset_json(raw, DatasetDescription(name="Cmp", channel_names={0: "CT"}, labels={"background": 0, "fg": 1},
                                               raters=RATERS, num_training=4, file_ending=".nii.gz"))
    for case, by_rater in LABELS.items():
        write_image(np.arange(16, dtype=np.float32).reshape(4, 4), PROPS, raw / "imagesTr" / f"{case}_0000.nii.gz")
        for r, m in by_rater.items():
            write_seg(m, PROPS, raw / "labelsTr" / r / f"{case}.nii.gz")
    (raw / "labelsTr" / "c").mkdir(parents=True, exist_ok=True)
    save_json(SPLITS, env_folders["preprocessed"] / DS / "splits_final.json")
    for tr, (samples, per_rater) in METHODS.items():
        for fold, split in enumerate(SPLITS):
            out = env_folders["results"] / DS / f"{tr}__DiffOSegPlans__2d" / f"fold_{fold}" / VAL_PREDICTIONS
            for case in split["val"]:
                (out / "samples").mkdir(parents=True, exist_ok=True)
                np.savez(out / "samples" / f"{case}.npz", samples=samples)
                for r, m in (per_rater or {}).items():
                    write_seg(m, PROPS, out / "raters" / r / f"{case}.nii.gz")
                if tr in CONSENSUS:
                    write_seg(CONSENSUS[tr], PROPS, out / "consensus" / f"{case}.nii.gz")
    return env_folders


def test_method_table_has_known_values_and_the_reference_rows(comparison_data, tmp_path):
    out = tmp_path / "cmp"
    main(["-d", DS, "-c", "2d", "-f", "0", "1", "-tr", "FakeATrainer", "FakeBTrainer", "-o", str(out), "--figures"])
    table = pd.read_csv(out / "method_comparison.csv")
    strict = table[table["mode"] == "strict"].set_index(["method", "metric"])
    assert set(table["method"]) == {"FakeA", "FakeB", EMPTY, MAJORITY, STAPLE, INTER_RATER}
    assert set(table["mode"]) == {"strict", "dpersona"}
    checks = [(row, m) for row in ("FakeA", "FakeB", EMPTY, MAJORITY, STAPLE, INTER_RATER) for m in ("GED", "Dice_soft")]
    checks += [(row, "Dice_rater_strict") for row in ("FakeA", EMPTY, MAJORITY, STAPLE)]
    for row, metric in checks:
        mean, std = expected(row if row not in ("FakeA", "FakeB") else f"{row}Trainer", metric)
        got = strict.loc[(row, metric)]
        assert got["mean"] == pytest.approx(mean, abs=1e-9), (row, metric)
        assert got["std"] == pytest.approx(std, abs=1e-9), (row, metric)
        assert got["num_folds"] == 2
    assert ("FakeB", "Dice_rater_strict") not in strict.index  # no per-rater predictions, no number
    # rater areas: FakeA predicts 8, 4, 4 pixels for a, b, c; fold 0's raters drew 6, 6, 12 on average
    # (rank correlation -0.5); fold 1's drew 4, 4, 4 (no ranking: NaN, left out); constant predictions: none
    assert spearman_by_hand([8, 4, 4], [6, 6, 12]) == pytest.approx(-0.5)
    got = strict.loc[("FakeA", AREA_SPEARMAN)]
    assert got["mean"] == pytest.approx(-0.5) and got["num_folds"] == 1
    for row in (EMPTY, MAJORITY, STAPLE, "FakeB"):
        assert (row, AREA_SPEARMAN) not in strict.index
    # Dice of the consensus to the raters' majority: A's cols(0) against c1..c4's majorities cols(0, 1), cols(3)
    # (col 2 is a tie of two raters: background), cols(1, 2), cols(0); the majority row scores 1, all-empty 0
    folds = [[dice(cols(0), majority(np.stack(list(LABELS[c].values())))) for c in split["val"]] for split in SPLITS]
    assert np.allclose(folds, [[2 / 3, 0], [0, 1]])
    assert strict.loc[("FakeA", MAJORITY_DICE), "mean"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert strict.loc[(MAJORITY, MAJORITY_DICE), "mean"] == 1.0 and strict.loc[(EMPTY, MAJORITY_DICE), "mean"] == 0.0
    assert ("FakeB", MAJORITY_DICE) not in strict.index
    # all-empty: Dice_max is 1 only on c4 (rater b is empty there), so fold 0 scores 0 and fold 1 scores 0.5
    assert strict.loc[(EMPTY, "Dice_max"), "mean"] == pytest.approx(0.25)

    per_fold = pd.read_csv(out / "method_comparison_per_fold.csv")
    assert set(per_fold["fold"]) == {0, 1} and set(per_fold["num_cases"]) == {2}
    md = (out / "method_comparison.md").read_text()
    for row in ("FakeA", "FakeB", EMPTY, MAJORITY, STAPLE, INTER_RATER, "strict mode", "dpersona mode", "per-rater Dice"):
        assert row in md
    figures = {f.name for f in (out / "figures").glob("*.png")}
    assert f"bars__{DS}__2d__GED.png" in figures and f"bars__{DS}__2d__Dice_soft.png" in figures
    assert f"samples__{DS}__2d__fold0__c1.png" in figures


def test_missing_method_predictions_are_reported_not_invented(comparison_data, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="diffoseg_auto.evaluation.method_comparison")
    table = compare_methods([DS], ["2d"], [0], ["FakeATrainer", "NoSuchTrainer"], tmp_path / "o")
    assert any("missing: predictions of NoSuchTrainer fold 0" in r.getMessage() for r in caplog.records)
    assert "NoSuch" not in set(table["method"]) and "FakeA" in set(table["method"])


def calibration_by_hand(S: np.ndarray, R: np.ndarray) -> tuple[float, float, float]:
    """ECE, Brier and NCC of one case written out pixel by pixel (band 2, chessboard distance)."""
    p, q = S.mean(0), R.mean(0)
    h, w = p.shape
    marked = [(y, x) for y in range(h) for x in range(w) if p[y, x] > 0 or q[y, x] > 0]
    counted = [(y, x) for y in range(h) for x in range(w) if any(max(abs(y - a), abs(x - b)) <= 2 for a, b in marked)]
    ps, qs = np.array([p[i] for i in counted]), np.array([q[i] for i in counted])
    bins = np.minimum((ps * 10 + 1e-9).astype(int), 9)
    ece = sum(abs(ps[bins == b].sum() - qs[bins == b].sum()) for b in range(10)) / len(ps)
    u, v = ps * (1 - ps), qs * (1 - qs)
    ncc = float("nan") if v.std() == 0 else 0.0 if u.std() == 0 else float(np.corrcoef(u, v)[0, 1])
    return ece, float(np.mean((ps - qs) ** 2)), ncc


def test_calibration_rows_and_reliability_diagrams(comparison_data, tmp_path):
    out = tmp_path / "cmp"
    main(["-d", DS, "-c", "2d", "-f", "0", "1", "-tr", "FakeATrainer", "FakeBTrainer", "-o", str(out), "--figures"])
    table = pd.read_csv(out / "method_comparison.csv")
    strict = table[table["mode"] == "strict"].set_index(["method", "metric"])
    # FakeA (p: col 0 1, col 1 .5): ECE c1 1/8, c2 3/4 (fold 0: 7/16), c3 11/24, c4 5/24 (fold 1: 1/3);
    # NCC 1/sqrt(3) on c1 and c3 (its uncertain column 1 lies where the raters disagree), -1/3 on c2 and c4
    ece = strict.loc[("FakeA", "ECE")]
    assert ece["mean"] == pytest.approx((7 / 16 + 1 / 3) / 2) and ece["std"] == pytest.approx((7 / 16 - 1 / 3) / np.sqrt(2))
    ncc = strict.loc[("FakeA", "Uncertainty_NCC")]
    assert ncc["mean"] == pytest.approx((1 / np.sqrt(3) - 1 / 3) / 2) and ncc["std"] == pytest.approx(0, abs=1e-12)
    for method, metric, k in (("FakeA", "Brier", 1), ("FakeB", "ECE", 0), ("FakeB", "Brier", 1),
                              ("FakeB", "Uncertainty_NCC", 2)):
        S = METHODS[f"{method}Trainer"][0]
        per_fold = []
        for split in SPLITS:
            vals = [calibration_by_hand(S, np.stack(list(LABELS[c].values())))[k] for c in split["val"]]
            per_fold.append(np.nanmean(vals))
        assert strict.loc[(method, metric), "mean"] == pytest.approx(np.mean(per_fold)), (method, metric)
    # the trivial rows repeat one label map: ECE and Brier score their overconfidence as for any prediction;
    # their uncertainty is constant, so the NCC is n/a (no number, no folds), in both modes
    for row in (EMPTY, MAJORITY, STAPLE):
        for metric, k in (("ECE", 0), ("Brier", 1)):
            per_fold = []
            for split in SPLITS:
                refs = [np.stack(list(LABELS[c].values())) for c in split["val"]]
                maps = [np.zeros((4, 4), np.uint8) if row == EMPTY else staple_by_sitk(R) if row == STAPLE
                        else majority(R) for R in refs]
                per_fold.append(np.nanmean([calibration_by_hand(m[None], R)[k] for m, R in zip(maps, refs)]))
            assert strict.loc[(row, metric), "mean"] == pytest.approx(np.mean(per_fold)), (row, metric)
        assert strict.loc[(row, "ECE"), "mean"] > 0.05
        got = table[(table["method"] == row) & (table["metric"] == "Uncertainty_NCC")]
        assert len(got) == 2 and got["mean"].isna().all() and (got["num_folds"] == 0).all()
    assert (INTER_RATER, "ECE") not in strict.index  # a rater's mask is not a probability: not scored
    dp = table[table["mode"] == "dpersona"].set_index(["method", "metric"])
    assert dp.loc[("FakeA", "ECE"), "mean"] == pytest.approx(ece["mean"])  # calibration has no mode
    md = (out / "method_comparison.md").read_text()
    cells = lambda line: [c.strip() for c in line.strip("| ").split(" | ")]
    header = cells(next(line for line in md.splitlines() if line.startswith("| method |") and "ECE" in line))
    empty_row = cells(next(line for line in md.splitlines() if line.startswith(f"| {EMPTY} |")))
    assert empty_row[header.index("Uncertainty_NCC")] == "n/a" and empty_row[header.index("ECE")] != "n/a"
    assert "Uncertainty_NCC is n/a where the predicted uncertainty is constant" in md  # the legend says why
    figures = {f.name for f in (out / "figures").glob("reliability__*.png")}
    assert figures == {f"reliability__{DS}__2d__{m}.png" for m in ("FakeA", "FakeB", EMPTY, MAJORITY, STAPLE)}
