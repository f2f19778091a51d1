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
