"""The one-standard-error rule that chooses the planned sampling steps and samples per rater prompt."""
import pytest

from planners.sampling_budget import smallest_within_one_se


def test_smallest_steps_within_one_se_of_the_best_ged():
    # LIDC fold 0 as measured in results.md (S = 5, 10, 25, 50): best 0.313 +- 0.045 -> every S qualifies
    curve = [{"S": 5, "GED": 0.348, "GED_se": 0.04}, {"S": 10, "GED": 0.360, "GED_se": 0.05},
             {"S": 25, "GED": 0.313, "GED_se": 0.045}, {"S": 50, "GED": 0.329, "GED_se": 0.05}]
    assert smallest_within_one_se(curve, "S", "GED") == 5
    tight = [{"S": 5, "GED": 0.40, "GED_se": 0.01}, {"S": 10, "GED": 0.33, "GED_se": 0.01},
             {"S": 25, "GED": 0.32, "GED_se": 0.015}, {"S": 50, "GED": 0.335, "GED_se": 0.01}]
    assert smallest_within_one_se(tight, "S", "GED") == 10  # 0.33 <= 0.32 + 0.015, 0.40 is not


def test_samples_per_rater_from_a_dice_curve_and_bad_input():
    curve = [{"n": 1, "Dice": 0.80, "Dice_se": 0.01}, {"n": 2, "Dice": 0.84, "Dice_se": 0.01},
             {"n": 4, "Dice": 0.85, "Dice_se": 0.02}, {"n": 8, "Dice": float("nan")}]
    assert smallest_within_one_se(curve, "n", "Dice", lower_is_better=False) == 2
    with pytest.raises(ValueError, match="no row"):
        smallest_within_one_se([{"n": 1, "Dice": None}], "n", "Dice", lower_is_better=False)


def _evidence(steps_curves, rater_curves):
    return {"sampling_steps": {"curves": [{"source": f"c{i}", "rows": rows} for i, rows in enumerate(steps_curves)]},
            "samples_per_rater": {"curves": [{"source": f"r{i}", "rows": rows} for i, rows in enumerate(rater_curves)]}}


def test_the_planned_setting_is_the_largest_pick_over_the_tuning_curves(tmp_path):
    import json

    from planners.sampling_budget import planned_sampling_budget

    flat = [{"S": 5, "GED": 0.30, "GED_se": 0.05}, {"S": 10, "GED": 0.29, "GED_se": 0.05}]  # picks 5
    steep = [{"S": 5, "GED": 0.50, "GED_se": 0.01}, {"S": 10, "GED": 0.31, "GED_se": 0.01},
             {"S": 25, "GED": 0.30, "GED_se": 0.01}]  # picks 10
    dice = [{"samples_per_rater": 1, "Dice_rater_strict": 0.70, "Dice_rater_strict_se": 0.01},
            {"samples_per_rater": 2, "Dice_rater_strict": 0.75, "Dice_rater_strict_se": 0.01},
            {"samples_per_rater": 4, "Dice_rater_strict": 0.755, "Dice_rater_strict_se": 0.01}]  # picks 2
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(_evidence([flat, steep], [dice])))
    assert planned_sampling_budget(path) == {"sampling_steps": 10, "samples_per_rater": 2}


def test_the_planner_writes_what_the_rule_picks_on_the_shipped_evidence():
    from planners.experiment_planner import ExperimentPlanner
    from planners.sampling_budget import EVIDENCE_FILE, load_evidence, planned_sampling_budget

    evidence = load_evidence()
    # the planner's curves come from the tuning seed / fold only
    assert all("(tuning)" in c["source"] for s in ("sampling_steps", "samples_per_rater")
               for c in evidence[s]["curves"]), EVIDENCE_FILE
    picked = planned_sampling_budget()
    dj = {"raters": ["a", "b", "c"], "labels": {"background": 0, "x": 1}, "channel_names": {"0": "MR"}}
    fp = {"num_cases": 20, "spacings": [[1.0, 1.0]] * 20, "shapes_after_crop": [[64, 64]] * 20,
          "intensity_range_per_channel": {"0": {"min": 0.0, "max": 1.0, "integer_valued": False}},
          "median_relative_size_after_cropping": 1.0,
          "foreground_intensity_properties_per_channel": {"0": {"mean": 0.5, "std": 0.2, "percentile_00_5": 0.0,
                                                                 "percentile_99_5": 1.0}}}
    cfg = ExperimentPlanner(dj, fp, "Dataset990_X").plan().get_configuration("2d")
    assert cfg.diffusion.sampling_steps == picked["sampling_steps"]
    assert cfg.stage2.num_samples_per_rater == picked["samples_per_rater"]
