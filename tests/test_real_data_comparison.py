"""`benchmarks/quality/real_data.py compare` end to end on the toy set with a tiny budget, in a subprocess with one
thread: every method trained, its held-out cases predicted, and the comparison table written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dataset_conversion.generate_toy_dataset import generate_toy_dataset
from diffoseg_auto.evaluation.method_comparison import EMPTY, INTER_RATER, MAJORITY, STAPLE
from diffoseg_auto.results_layout import VAL_PREDICTIONS
from support.pipeline import make_plans_tiny
from planners.plan_and_preprocess_entrypoints import plan_and_preprocess

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["DiffOSegTrainer", "ConsensusUNetTrainer", "MultiHeadUNetTrainer", "ProbUNetTrainer"]


@pytest.mark.slow
def test_real_data_comparison_script_on_the_toy_set(env_folders, tmp_path):
    raw = generate_toy_dataset(env_folders["raw"] / "Dataset950_ToyCmp", dim=2, num_cases=8, num_raters=4, seed=7)
    plan_and_preprocess(["-d", "950", "-np", "1", "-c", "2d"])
    make_plans_tiny(env_folders["preprocessed"] / raw.name / "DiffOSegPlans.json", [32, 32], 0.5)
    out = tmp_path / "cmp"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "quality" / "real_data.py"), "compare", "-d", "950", "-c", "2d", "-f", "0",
           "--minutes", "0.05", "--iterations_per_epoch", "2", "--num_samples", "3", "--sampling_steps", "2", "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]

    run = json.loads((out / "run.json").read_text())
    assert run["threads"] == 1 and run["folds_done"] == [0] and set(run["methods"]) == set(METHODS)
    assert run["command"].startswith("python benchmarks/quality/real_data.py compare -d 950 -c 2d")
    for tr in METHODS:
        entry = run["methods"][tr]["0"]
        assert "error" not in entry, entry
        assert entry["training"]["stage1"]["iterations"] >= 2
        assert ("stage2" in entry["training"]) == (tr == "DiffOSegTrainer")  # DiffOSeg splits the budget in two
        folder = env_folders["results"] / raw.name / f"{tr}__DiffOSegPlans__2d" / "fold_0" / VAL_PREDICTIONS
        assert len(list((folder / "samples").glob("*.npz"))) >= 1 and (folder / "raters").is_dir()
    assert run["methods"]["DiffOSegTrainer"]["0"]["minutes"] == pytest.approx({"stage1": 0.05 * 2 / 3, "stage2": 0.05 / 3})
    table = pd.read_csv(out / "method_comparison.csv")
    assert set(table["method"]) == {"DiffOSeg", "ConsensusUNet", "MultiHeadUNet", "ProbUNet", EMPTY, MAJORITY, STAPLE,
                                    INTER_RATER}
    ged = table[(table["metric"] == "GED") & (table["mode"] == "strict")]
    assert len(ged) == 8 and ged["mean"].between(0, 2).all()
    assert (out / "figures" / "bars__Dataset950_ToyCmp__2d__GED.png").is_file()
    assert "ProbUNet" in res.stdout  # the table is printed at the end
