"""End to end on the 2D toy dataset with a tiny budget: generate -> plan -> train both stages ->
predict held-out cases -> evaluate -> benchmark (tables, plot, figures, inter-rater row)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dataset_conversion.generate_toy_dataset import generate_toy_dataset
from diffoseg_auto.evaluation.benchmark_aggregate import INTER_RATER
from diffoseg_auto.evaluation.benchmark_entrypoint import BenchmarkSettings, benchmark
from diffoseg_auto.utilities.file_ops import load_json
from support.pipeline import TRAINER_FOLDER, run_pipeline

pytestmark = pytest.mark.slow  # trains and predicts a whole dataset


def test_toy_end_to_end_with_benchmark(env_folders, tmp_path):
    raw = generate_toy_dataset(env_folders["raw"] / "Dataset930_ToyE2E", dim=2, num_cases=8, num_raters=4, seed=3)
    # 64x64 toy images, a 32x32 patch: the sliding window (3 x 3 windows at step 0.5) is exercised
    summary = run_pipeline(env_folders, raw, 930, patch=[32, 32], step_size=0.5)
    # 8 ungrouped cases in 5 folds -> fold 0 holds 2; the summary is the mean of its per-case values
    val = load_json(env_folders["preprocessed"] / raw.name / "splits_final.json")[0]["val"]
    assert summary["num_cases"] == len(val) == 2
    assert sorted(c["case"] for c in summary["per_case"]) == sorted(val)
    for metric in ("GED", "Dice_soft", "Dice_max"):
        per_case = [c[metric] for c in summary["per_case"]]
        assert summary["metrics"][metric] == pytest.approx(np.mean(per_case))
        assert summary["metrics_std"][metric] == pytest.approx(np.std(per_case))

    # the trainer's own validation exported its predictions in the raw geometry (Stage I and II)
    fold = env_folders["results"] / raw.name / TRAINER_FOLDER / "fold_0"
    val_cases = load_json(fold / "stage1" / "validation" / "summary.json")["per_case"]
    case = val_cases[0]["case"]
    assert (fold / "stage1" / "validation" / "consensus" / f"{case}.nii.gz").is_file()
    assert (fold / "stage1" / "validation" / "samples" / f"{case}.npz").is_file()
    assert (fold / "stage2" / "validation" / "raters" / "rater0_dilate" / f"{case}.nii.gz").is_file()

    out = tmp_path / "bench"
    table = benchmark([930], ["2d"], [0], output_folder=out, settings=BenchmarkSettings(figures=True))
    for name in ("benchmark.csv", "benchmark.md", "benchmark.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    figures = sorted((out / "figures").glob("*.png"))
    assert any(f.name == f"Dataset930_ToyE2E__2d__fold0__{case}.png" for f in figures)

    csv = pd.read_csv(out / "benchmark.csv")
    assert set(csv["configuration"]) == {"2d", INTER_RATER}
    model = table[(table["configuration"] == "2d") & (table["metric"] == "GED")]["mean"].item()
    stage1 = load_json(fold / "stage1" / "validation" / "summary.json")["metrics"]["GED"]
    assert math.isclose(model, stage1, rel_tol=1e-9)  # one fold: the table holds the fold's validation value
    inter = table[table["configuration"] == INTER_RATER]
    assert not inter.empty and np.all((inter["mean"].dropna() >= 0) & (inter["mean"].dropna() <= 2))
    assert "Dataset930_ToyE2E" in (out / "benchmark.md").read_text()
