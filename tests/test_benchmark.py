"""diffoseg_benchmark on fake validation summaries and a tiny raw dataset (inter-rater row)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
from diffoseg_auto.evaluation.benchmark_collect import collect_results
from diffoseg_auto.evaluation.benchmark_entrypoint import BenchmarkSettings, benchmark, main
from diffoseg_auto.evaluation.benchmark_tables import dataframe_to_markdown
from diffoseg_auto.evaluation.inter_rater import inter_rater_reference
from diffoseg_auto.evaluation.figures import plot_case_grid
from diffoseg_auto.io.image_io import write_image, write_seg
from diffoseg_auto.utilities.file_ops import save_json

DS = "Dataset001_Tiny"
MODEL = "DiffOSegTrainer__DiffOSegPlans__2d"
PROPS = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0], "shape": [4, 4]}


def cols(*idx: int) -> np.ndarray:
    m = np.zeros((4, 4), np.uint8)
    m[:, list(idx)] = 1
    return m


def write_raw(raw_root: Path) -> Path:
    raw = raw_root / DS
    write_dataset_json(raw, DatasetDescription(name="Tiny", channel_names={0: "CT"},
                                               labels={"background": 0, "fg": 1}, raters=["a", "b", "c"],
                                               num_training=2, file_ending=".nii.gz"))
    for case in ("c1", "c2"):
        write_image(np.arange(16, dtype=np.float32).reshape(4, 4), PROPS, raw / "imagesTr" / f"{case}_0000.nii.gz")
    write_seg(cols(0, 1), PROPS, raw / "labelsTr" / "a" / "c1.nii.gz")
    write_seg(cols(0), PROPS, raw / "labelsTr" / "b" / "c1.nii.gz")  # rater c did not annotate c1
    write_seg(cols(3), PROPS, raw / "labelsTr" / "a" / "c2.nii.gz")  # c2: a single rater -> skipped
    (raw / "labelsTr" / "c").mkdir(parents=True)
    return raw


def write_summaries(results_root: Path) -> None:
    folds = {0: ({"GED": 0.4, "Dice_max": 0.6}, {"GED": 0.5, "Dice_rater_strict": 0.7}, [[1.0, 0.5], [0.5, 1.0]]),
             1: ({"GED": 0.2, "Dice_max": 0.8}, {"GED": 0.3, "Dice_rater_strict": 0.9}, [[0.8, float("nan")], [0.6, 0.9]])}
    for f, (s1, s2, mat) in folds.items():
        base = results_root / DS / MODEL / f"fold_{f}"
        save_json({"mode": "strict", "metrics": s1, "rater_prompt_dice_matrix": None}, base / "stage1" / "validation" / "summary.json")
        save_json({"mode": "strict", "metrics": s2, "rater_prompt_dice_matrix": mat, "raters": ["a", "b"]},
                  base / "stage2" / "validation" / "summary.json")


def test_inter_rater_reference_leave_one_out(env_folders):
    raw = write_raw(env_folders["raw"])
    ref = inter_rater_reference(raw, mode="strict")
    assert ref["num_cases"] == 1  # c2 has only one rater
    # a vs {b} and b vs {a}: Dice 8/12 both ways; GED = 2 * (1 - IoU 4/8) - 0 - 0
    assert ref["metrics"]["Dice_max"] == pytest.approx(2 / 3)
    assert ref["metrics"]["Dice_match"] == pytest.approx(2 / 3)
    assert ref["metrics"]["Dice_soft"] == pytest.approx(2 / 3)
    assert ref["metrics"]["GED"] == pytest.approx(1.0)
    assert set(ref["per_rater"]) == {"a", "b"}


def test_benchmark_tables_over_two_folds(env_folders, tmp_path, caplog):
    write_raw(env_folders["raw"])
    write_summaries(env_folders["results"])
    out = tmp_path / "bench"
    with caplog.at_level(logging.WARNING):
        table = benchmark(["1"], ["2d"], [0, 1, 2], out)
    messages = [r.getMessage() for r in caplog.records]
    # fold 2 was never validated: reported, with the command that creates it, and skipped
    missing = [m for m in messages if "fold_2" in m]
    assert len(missing) == 2 and all("--val" in m and "diffoseg_train Dataset001_Tiny 2d 2" in m for m in missing)
    assert "fold_2/stage1/validation/summary.json" in missing[0]
    model = table[table["configuration"] == "2d"].set_index("metric")
    std = np.sqrt(2 * 0.1 ** 2 / 1)  # sample std of two values 0.1 apart from their mean
    assert model.loc["GED", "mean"] == pytest.approx(0.3) and model.loc["GED", "std"] == pytest.approx(std)
    assert model.loc["Dice_max", "mean"] == pytest.approx(0.7)
    assert model.loc["Dice_rater_strict", "mean"] == pytest.approx(0.8)
    assert model.loc["stage2/GED", "mean"] == pytest.approx(0.4)  # clashing Stage II key is prefixed
    assert model.loc["GED", "num_folds"] == 2
    inter = table[table["configuration"] == "inter-rater reference"].set_index("metric")
    assert inter.loc["Dice_max", "mean"] == pytest.approx(2 / 3)
    for name in ("benchmark.csv", "benchmark.md", "benchmark.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    csv = pd.read_csv(out / "benchmark.csv")
    assert csv[(csv.metric == "GED") & (csv.configuration == "2d")]["mean"].item() == pytest.approx(0.3)
    md = (out / "benchmark.md").read_text()
    assert "## Dataset001_Tiny" in md and "| GED | 0.3000 ± 0.1414 | 1.0000 ± 0.0000 |" in md


def test_rater_prompt_matrix_mean_over_folds(env_folders):
    write_summaries(env_folders["results"])
    _, mats = collect_results(env_folders["results"], [DS], ["2d"], [0, 1], "DiffOSegTrainer", "DiffOSegPlans")
    m, raters = mats[(DS, "2d")]
    np.testing.assert_allclose(m, [[0.9, 0.5], [0.55, 0.95]])
    assert raters == ["a", "b"]


def test_cli_and_figures(env_folders, tmp_path, capsys):
    write_raw(env_folders["raw"])
    write_summaries(env_folders["results"])
    val = env_folders["results"] / DS / MODEL / "fold_0" / "stage2" / "validation"
    write_seg(cols(0), PROPS, val / "consensus" / "c1.nii.gz")
    (val / "samples").mkdir()
    np.savez_compressed(val / "samples" / "c1.npz", samples=np.stack([cols(0), cols(0, 1)]))
    out = tmp_path / "bench"
    main(["-d", "1", "-c", "2d", "-f", "0", "1", "-o", str(out), "--figures", "--inter_rater"])
    printed = capsys.readouterr().out
    assert "| metric | 2d | inter-rater reference |" in printed
    assert (out / "figures" / f"{DS}__2d__fold0__c1.png").is_file()
    assert "fold1" not in " ".join(p.name for p in (out / "figures").iterdir())  # fold 1 has no predictions
    details = json.loads((out / f"inter_rater__{DS}.json").read_text())
    assert details["metrics"]["GED"] == pytest.approx(1.0)


def test_plot_case_grid_3d(tmp_path):
    labels = np.zeros((2, 3, 4, 4), np.uint8)
    labels[:, 1, :, 0] = 1
    out = tmp_path / "grid.png"
    plot_case_grid(np.zeros((1, 3, 4, 4), np.float32), labels, labels.copy(), labels.copy(), out,
                   rater_mask=np.array([True, False]))
    one_row = tmp_path / "one_row.png"
    plot_case_grid(np.zeros((1, 3, 4, 4), np.float32), labels, None, None, one_row)
    from matplotlib.image import imread

    full, row = imread(out), imread(one_row)
    # 3 rows (raters, samples, per-rater predictions) x 3 columns vs 1 row of the same width
    assert full.shape[1] == row.shape[1] and 200 < full.shape[1] < 700
    assert 2.2 < full.shape[0] / row.shape[0] < 3.8
    rgb = full[..., :3]
    drawn = (rgb < 0.95).any(axis=-1)  # not the white background
    assert 0.05 < drawn.mean() < 0.95  # panels were drawn, and they do not fill everything
    assert len(np.unique(rgb[drawn].round(2), axis=0)) > 3  # gray image, label colours, titles: not one flat colour


def test_dataframe_to_markdown():
    df = pd.DataFrame({"x": ["1", "2"], "y": [float("nan"), 3.5]}, index=pd.Index(["a", "b"], name="m"))
    assert dataframe_to_markdown(df) == "| m | x | y |\n|---|---:|---:|\n| a | 1 |  |\n| b | 2 | 3.5 |"


def test_calibration_in_the_benchmark_and_reliability_diagram(env_folders, tmp_path):
    write_raw(env_folders["raw"])
    bins = {"count": [8, 0, 0, 0, 0, 0, 0, 8, 0, 8], "sum_p": [0, 0, 0, 0, 0, 0, 0, 6, 0, 8],
            "sum_q": [0, 0, 0, 0, 0, 0, 0, 4, 0, 8]}
    stage1 = {"DiffOSegTrainer": [{"GED": 0.4, "ECE": 0.1, "Brier": 0.02, "Uncertainty_NCC": 0.5},
                                  {"GED": 0.2, "ECE": 0.3, "Brier": 0.04, "Uncertainty_NCC": 0.7}],
              "ConsensusUNetTrainer": [{"GED": 0.6, "ECE": "n/a", "Brier": "n/a", "Uncertainty_NCC": "n/a"}] * 2}
    for trainer, per_fold in stage1.items():
        for f, metrics in enumerate(per_fold):
            save_json({"mode": "strict", "metrics": metrics, "reliability": None if trainer.startswith("Consensus") else bins},
                      env_folders["results"] / DS / f"{trainer}__DiffOSegPlans__2d" / f"fold_{f}" / "stage1" / "validation"
                      / "summary.json")
    out = tmp_path / "soft"
    with_figures = BenchmarkSettings(figures=True)
    table = benchmark(["1"], ["2d"], [0, 1], out, settings=with_figures).set_index(["configuration", "metric"])
    assert table.loc[("2d", "ECE"), "mean"] == pytest.approx(0.2) and table.loc[("2d", "Brier"), "mean"] == pytest.approx(0.03)
    assert table.loc[("2d", "Uncertainty_NCC"), "num_folds"] == 2
    assert (out / "figures" / f"reliability__{DS}__2d__DiffOSeg.png").is_file()
    md = (out / "benchmark.md").read_text()
    assert "| ECE | 0.2000 ± 0.1414 |" in md

    det = tmp_path / "det"
    table = benchmark(["1"], ["2d"], [0, 1], det, trainer="ConsensusUNetTrainer", settings=with_figures)
    ece = table[(table["configuration"] == "2d") & (table["metric"] == "ECE")]
    assert ece["mean"].isna().all() and (ece["num_folds"] == 0).all()  # n/a, never a number
    assert "| ECE | n/a |" in (det / "benchmark.md").read_text()
    assert not list(det.glob("figures/reliability__*.png"))  # no soft output, no diagram
