"""`benchmarks/quality/real_data.py test`, the held-out test protocol: its numbers (mean ± standard error over the sampled
test cases, DiffOSeg's paired differences, the records of several sessions) on hand-made tables, and the command end
to end on a toy dataset with a test split (tiny budget, subprocess, one thread), run twice to show that trained
methods are reused."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.quality import real_data_records as records
from benchmarks.quality import real_data_test_table as table
from dataset_conversion.generate_toy_dataset import generate_toy_dataset
from diffoseg_auto.cli.fold_images import sample_cases
from diffoseg_auto.evaluation.method_comparison import AREA_SPEARMAN, EMPTY, INTER_RATER, MAJORITY, STAPLE
from diffoseg_auto.results_layout import checkpoint_path, trainer_folder, ts_predictions_folder
from planners.plan_and_preprocess_entrypoints import plan_and_preprocess
from support.held_out import move_to_test_split
from support.pipeline import make_plans_tiny

ROOT = Path(__file__).resolve().parents[1]


def per_case_rows() -> pd.DataFrame:
    """DiffOSeg and a baseline on three cases (strict), the inter-rater row on two of them."""
    rows = [["DiffOSeg", "strict", c, g, d] for c, g, d in (("t1", 0.2, 0.8), ("t2", 0.4, 0.6), ("t3", 0.3, np.nan))]
    rows += [["Base", "strict", c, g, 0.5] for c, g in (("t1", 0.5), ("t2", 0.5), ("t3", 0.8))]
    rows += [[INTER_RATER, "strict", c, g, 0.7] for c, g in (("t1", 0.1), ("t3", 0.5))]
    return pd.DataFrame(rows, columns=["method", "mode", "case", "GED", "Dice_soft"])


def test_mean_and_standard_error_over_the_cases_and_the_paired_differences():
    sample = pd.DataFrame([["DiffOSeg", "strict", AREA_SPEARMAN, 0.5]], columns=table.SAMPLE_LEVEL_COLUMNS)
    summary = table.summary_table(per_case_rows(), sample, "Dataset009_X", "2d").set_index(["method", "metric"])
    ged = summary.loc[("DiffOSeg", "GED")]
    assert ged["mean"] == pytest.approx(0.3) and ged["se"] == pytest.approx(0.1 / math.sqrt(3))
    assert ged["num_cases"] == 3
    dsoft = summary.loc[("DiffOSeg", "Dice_soft")]  # a NaN case is left out of its metric
    assert dsoft["mean"] == pytest.approx(0.7) and dsoft["num_cases"] == 2
    assert summary.loc[("DiffOSeg", AREA_SPEARMAN), "mean"] == 0.5
    assert math.isnan(summary.loc[("DiffOSeg", AREA_SPEARMAN), "se"])
    paired = table.paired_differences(per_case_rows()).set_index("method")
    # DiffOSeg minus Base: -0.3, -0.1, -0.5 (mean -0.3, sd 0.2); minus inter-rater on t1, t3: 0.1, -0.2
    assert paired.loc["Base", "mean"] == pytest.approx(-0.3)
    assert paired.loc["Base", "se"] == pytest.approx(0.2 / math.sqrt(3))
    assert bool(paired.loc["Base", "lower_by_more_than_se"]) is True
    assert paired.loc[INTER_RATER, "mean"] == pytest.approx(-0.05) and paired.loc[INTER_RATER, "num_cases"] == 2
    assert bool(paired.loc[INTER_RATER, "lower_by_more_than_se"]) is False
    md = table.held_out_markdown(table.summary_table(per_case_rows(), sample, "Dataset009_X", "2d"),
                                 table.paired_differences(per_case_rows()), ["Base", "DiffOSeg"],
                                 {"dataset": "Dataset009_X", "configuration": "2d", "test_split": "every fifth patient",
                                  "sample": "3 of 9 cases", "training": "1 min", "raters": ["r0"],
                                  "raters_are_slots": True})
    assert "Test split: every fifth patient." in md and "| Base | 0.6000 ± 0.1000 |" in md
    assert "(Base: 3, DiffOSeg: 3, inter-rater: 2 cases (the inter-rater row: those with two raters))" in md
    assert md.index("| Base |") < md.index("| DiffOSeg |") < md.index(f"| {INTER_RATER} |")  # -tr order first
    assert "| strict | Base | -0.3000 ± 0.1155 | 3 | yes |" in md


def test_held_out_records_add_up_per_method_on_one_sample(tmp_path):
    info = {"dataset": "Dataset009_X", "configuration": "2d", "sample": {"seed": 0, "cases": ["t1", "t2", "t3"]}}
    rows = per_case_rows()
    none = pd.DataFrame(columns=table.SAMPLE_LEVEL_COLUMNS)
    records.record_held_out(tmp_path, rows[rows["method"] != "Base"], none, info, {"DiffOSeg": {"revision": "a"}})
    spear = pd.DataFrame([["Base", "strict", AREA_SPEARMAN, -0.5]], columns=table.SAMPLE_LEVEL_COLUMNS)
    csv = records.record_held_out(tmp_path, rows[rows["method"] != "DiffOSeg"], spear, info, {"Base": {"revision": "b"}})
    kept, sample, meta = records.held_out_record(tmp_path, "Dataset009_X", "2d")
    assert set(kept["method"]) == {"DiffOSeg", "Base", INTER_RATER} and len(kept) == 8
    assert sample.values.tolist() == [["Base", "strict", AREA_SPEARMAN, -0.5]]
    assert meta["methods"] == {"DiffOSeg": {"revision": "a"}, "Base": {"revision": "b"}}
    summary = pd.read_csv(csv).set_index(["method", "metric"])
    assert summary.loc[("Base", "GED"), "mean"] == pytest.approx(0.6)
    with pytest.raises(SystemExit, match="test.json: recorded on another test sample"):
        records.record_held_out(tmp_path, rows, none, {**info, "sample": {"seed": 1, "cases": ["t1"]}}, {})


def run_test_command(out: Path, record: Path | None, extra: list[str] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "quality" / "real_data.py"), "test", "-d", "952", "-c", "2d",
           "-tr", "DiffOSegTrainer", "ConsensusUNetTrainer", "--minutes", "0.05", "--iterations_per_epoch", "2",
           "--num_samples", "3", "--sampling_steps", "2", "--test_sample", "2", "--seed", "0", "--out", str(out),
           *(["--record", str(record)] if record else []), *extra]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_the_held_out_test_command_on_a_toy_test_split(env_folders, tmp_path):
    raw = generate_toy_dataset(env_folders["raw"] / "Dataset952_ToyTest", dim=2, num_cases=9, num_raters=4, seed=7)
    test_cases = ["toy_006", "toy_007", "toy_008"]
    move_to_test_split(raw, test_cases)
    plan_and_preprocess(["-d", "952", "-np", "1", "-c", "2d"])
    make_plans_tiny(env_folders["preprocessed"] / raw.name / "DiffOSegPlans.json", [32, 32], 0.5)
    out, rec = tmp_path / "test", tmp_path / "records"
    run_test_command(out, rec, ["--curves"])

    result = json.loads((out / "test_comparison.json").read_text())
    sample = sample_cases(test_cases, 2, seed=0)
    assert result["sample"] == {"seed": 0, "size_asked": 2, "num_test_cases": 3, "cases": sample}
    assert result["num_training_cases"] == 6 and result["command"].startswith("python benchmarks/quality/real_data.py test")
    for label, trainer in (("DiffOSeg", "DiffOSegTrainer"), ("ConsensusUNet", "ConsensusUNetTrainer")):
        entry = result["methods"][label]
        assert "error" not in entry, entry
        assert entry["training"]["stage1"]["iterations"] >= 2
        assert ("stage2" in entry["training"]) == (label == "DiffOSeg")  # DiffOSeg splits the budget in two
        folder = trainer_folder(raw.name, trainer, "DiffOSegPlans", "2d")
        predicted = sorted(f.stem for f in (ts_predictions_folder(folder) / "samples").glob("*.npz"))
        assert predicted == sample
    summary = pd.read_csv(out / "test_comparison.csv")
    assert set(summary["method"]) == {"DiffOSeg", "ConsensusUNet", EMPTY, MAJORITY, STAPLE, INTER_RATER}
    ged = summary[(summary["metric"] == "GED") & (summary["mode"] == "strict")].set_index("method")
    assert ged["mean"].between(0, 2).all() and (ged.loc[["DiffOSeg", "ConsensusUNet", EMPTY], "num_cases"] == 2).all()
    md = (out / "test_comparison.md").read_text()
    assert "Test split: the toy cases toy_006, toy_007, toy_008 (imagesTs/labelsTs)." in md
    assert "2 of the 3 test cases, drawn with seed 0" in md and "slots, not persons" in md
    assert "| strict | ConsensusUNet |" in md  # the paired differences
    assert set(pd.read_csv(rec / raw.name / "2d" / "test.csv")["method"]) == set(summary["method"])
    curve = pd.read_csv(out / "test_learning_curves.csv")  # the checkpoints of fold all, on the same two cases
    assert set(curve["method"]) == {"DiffOSeg", "ConsensusUNet"} and set(curve["cases"]) == {2}
    assert set(curve[curve["method"] == "DiffOSeg"]["stage"]) == {1, 2} and curve["GED"].between(0, 2).all()
    final = curve[(curve["method"] == "ConsensusUNet") & (curve["fraction"] == 1)]["GED"]
    assert final.item() == pytest.approx(ged.loc["ConsensusUNet", "mean"])  # the final point is the final model
    kept = pd.read_csv(rec / raw.name / "2d" / "test_curve.csv").sort_values(["method", "seconds"])
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), curve)

    ckpts = {tr: checkpoint_path(trainer_folder(raw.name, tr, "DiffOSegPlans", "2d"), "all", 1).stat().st_mtime_ns
             for tr in ("DiffOSegTrainer", "ConsensusUNetTrainer")}
    again = run_test_command(tmp_path / "again", rec)  # recorded: neither trained nor predicted again
    assert "DiffOSegTrainer, ConsensusUNetTrainer: recorded in" in again.stdout
    assert pd.read_csv(tmp_path / "again" / "test_comparison.csv").equals(summary)
    plain = run_test_command(tmp_path / "plain", None)  # no record: the trained models and predictions are reused
    entries = json.loads((tmp_path / "plain" / "test_comparison.json").read_text())["methods"]
    assert {e["training"] for e in entries.values()} == {"reused"}
    assert all(e["prediction"]["reused"] for e in entries.values())
    assert ckpts == {tr: checkpoint_path(trainer_folder(raw.name, tr, "DiffOSegPlans", "2d"), "all", 1).stat().st_mtime_ns
                     for tr in ckpts}
