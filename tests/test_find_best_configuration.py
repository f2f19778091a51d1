"""diffoseg_find_best_configuration: the rule (GED, then Dice_soft within one standard error) on hand-made
held-out predictions of two configurations x 5 folds; what is missing is named; and on a tiny model's real
held-out predictions, the written instructions are executed as written."""
from __future__ import annotations

import copy
import math
import shlex
import shutil

import numpy as np
import pytest

from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
from diffoseg_auto.evaluation.evaluate_entrypoint import evaluate_folder
from diffoseg_auto.evaluation.find_best_configuration import (INFORMATION, INSTRUCTIONS, Candidate,
                                                              IncompleteCrossValidationError, Member,
                                                              find_best_configuration, main, select_best)
from diffoseg_auto.evaluation.prediction_folder import EvaluationInputError
from diffoseg_auto.inference import ensemble, predict_entrypoint
from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
from diffoseg_auto.io.image_io import read_images, write_image, write_seg
from diffoseg_auto.paths import ENV_NUM_PROCESSES
from diffoseg_auto.results_layout import VAL_PREDICTIONS
from diffoseg_auto.utilities.file_ops import load_json, save_json
from support.predictor_models import DATASET, tiny_plans, write_model_folder, write_raw_input

DS = "Dataset005_Best"
PROPS = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0], "shape": [4, 4]}
CASES = [f"c{i}" for i in range(10)]
SPLITS = [{"train": [c for c in CASES if c not in CASES[2 * f:2 * f + 2]], "val": CASES[2 * f:2 * f + 2]}
          for f in range(5)]


def cols(*idx: int) -> np.ndarray:
    m = np.zeros((4, 4), np.uint8)
    m[:, list(idx)] = 1
    return m


RATER_A, RATER_B = cols(0), cols(0, 1)
# '2d' repeats rater a, '2d_b' rater b: each alone has GED 0.25 (d(a, b) = 1 - IoU = 0.5: 2 * 0.25 - 0 - 0.25), their
# pooled samples GED 0 (2 * 0.25 - 0.25 - 0.25); alone they tie on GED and '2d' has the higher Dice_soft
# (thresholds 0.1 .. 0.9 of the raters' mean: 0.1 and 0.3 see cols 0-1, the rest col 0; '2d': (2 * 2/3 + 3) / 5,
# '2d_b': (2 + 3 * 2/3) / 5)
SAMPLES = {"2d": np.stack([RATER_A, RATER_A]), "2d_b": np.stack([RATER_B, RATER_B])}


def model_dir(env, configuration, trainer="DiffOSegTrainer"):
    return env["results"] / DS / f"{trainer}__DiffOSegPlans__{configuration}"


@pytest.fixture
def cross_validation(env_folders):
    raw = env_folders["raw"] / DS
    write_dataset_json(raw, DatasetDescription(name="Best", channel_names={0: "CT"},
                                               labels={"background": 0, "fg": 1}, raters=["a", "b"],
                                               num_training=len(CASES), file_ending=".nii.gz"))
    for case in CASES:
        write_image(np.zeros((4, 4), np.float32), PROPS, raw / "imagesTr" / f"{case}_0000.nii.gz")
        write_seg(RATER_A, PROPS, raw / "labelsTr" / "a" / f"{case}.nii.gz")
        write_seg(RATER_B, PROPS, raw / "labelsTr" / "b" / f"{case}.nii.gz")
    save_json(SPLITS, env_folders["preprocessed"] / DS / "splits_final.json")
    for cfg, samples in SAMPLES.items():
        for fold, split in enumerate(SPLITS):
            out = model_dir(env_folders, cfg) / f"fold_{fold}" / VAL_PREDICTIONS
            (out / "samples").mkdir(parents=True)
            for case in split["val"]:
                np.savez(out / "samples" / f"{case}.npz", samples=samples)
    return env_folders


def test_the_ensemble_wins_and_its_commands_are_written(cross_validation, capsys):
    main(["-d", DS])
    printed = capsys.readouterr().out
    info = load_json(cross_validation["results"] / DS / INFORMATION)
    stats = {c["name"]: c for c in info["candidates"]}
    single, other = "DiffOSegTrainer__DiffOSegPlans__2d", "DiffOSegTrainer__DiffOSegPlans__2d_b"
    pair = f"ensemble({single} + {other})"
    assert set(stats) == {single, other, pair} and info["best"] == pair
    assert stats[single]["GED"] == pytest.approx(0.25) and stats[pair]["GED"] == pytest.approx(0.0)
    assert stats[single]["Dice_soft"] == pytest.approx((2 * 2 / 3 + 3) / 5)
    assert stats[pair]["num_cases"] == 10 and info["cases_per_fold"]["4"] == ["c8", "c9"]
    assert stats[single]["per_fold"]["3"] == {"GED": pytest.approx(0.25), "Dice_soft": pytest.approx(0.8667, abs=1e-4),
                                              "num_cases": 2}
    assert info["commands"] == [
        f"diffoseg_predict -d {DS} -i INPUT_FOLDER -o OUTPUT_FOLDER_MODEL_1 -c 2d -tr DiffOSegTrainer -p DiffOSegPlans "
        "-f 0 1 2 3 4 --save_samples --save_probabilities",
        f"diffoseg_predict -d {DS} -i INPUT_FOLDER -o OUTPUT_FOLDER_MODEL_2 -c 2d_b -tr DiffOSegTrainer -p DiffOSegPlans "
        "-f 0 1 2 3 4 --save_samples --save_probabilities",
        "diffoseg_ensemble -i OUTPUT_FOLDER_MODEL_1 OUTPUT_FOLDER_MODEL_2 -o OUTPUT_FOLDER"]
    text = (cross_validation["results"] / DS / INSTRUCTIONS).read_text()
    assert all(c in text for c in info["commands"]) and "Rule: lowest mean GED" in text and text in printed


def test_equal_ged_is_decided_by_dice_soft(cross_validation):
    info = find_best_configuration(DS, ensembles=False)
    stats = {c["name"]: c for c in info["candidates"]}
    assert len(stats) == 2 and all(s["equal_to_lowest_GED"] for s in stats.values())
    assert info["best"] == "DiffOSegTrainer__DiffOSegPlans__2d"  # the same GED, the higher Dice_soft
    assert info["commands"] == [f"diffoseg_predict -d {DS} -i INPUT_FOLDER -o OUTPUT_FOLDER -c 2d -tr DiffOSegTrainer "
                                "-p DiffOSegPlans -f 0 1 2 3 4"]


def test_selection_rule_on_per_case_numbers():
    m = [Member("T", "P", c) for c in ("a", "b", "c")]
    low = Candidate((m[0],), ged=[0.10, 0.20, 0.10, 0.20], dice_soft=[0.5] * 4)
    far = Candidate((m[1],), ged=[0.30, 0.40, 0.30, 0.40], dice_soft=[0.9] * 4)  # better Dice_soft, GED far worse
    best, stats = select_best([low, far])
    assert best is low and not stats[far.name]["equal_to_lowest_GED"]
    assert stats[far.name]["GED_difference_se"] == pytest.approx(0.0)  # the same +0.2 on every case
    near = Candidate((m[2],), ged=[0.05, 0.30, 0.05, 0.30], dice_soft=[0.7] * 4)  # +0.025 mean, SE 0.043
    best, stats = select_best([low, far, near])
    se = np.std([-0.05, 0.1, -0.05, 0.1], ddof=1) / 2
    assert stats[near.name]["GED_difference_to_lowest"] == pytest.approx(0.025)
    assert stats[near.name]["GED_difference_se"] == pytest.approx(se) and 0.025 <= se
    assert best is near  # within one SE of the lowest GED, and the higher Dice_soft


def test_missing_folds_and_samples_are_named(cross_validation):
    shutil.rmtree(model_dir(cross_validation, "2d_b") / "fold_4" / VAL_PREDICTIONS)
    shutil.rmtree(model_dir(cross_validation, "2d_b") / "fold_2" / VAL_PREDICTIONS)
    with pytest.raises(IncompleteCrossValidationError, match=r"2d_b fold\(s\) 2, 4 \(no fold_N/val_predictions"):
        find_best_configuration(DS)
    with pytest.raises(IncompleteCrossValidationError, match="no trained model DiffOSegTrainer__DiffOSegPlans__3d"):
        find_best_configuration(DS, configurations=["2d", "3d_fullres"])
    info = find_best_configuration(DS, folds=[0, 1, 3])  # the folds every configuration has
    assert info["folds"] == [0, 1, 3] and "-f 0 1 3" in info["commands"][0]
    (model_dir(cross_validation, "2d") / "fold_0" / VAL_PREDICTIONS / "samples" / "c0.npz").unlink()
    (model_dir(cross_validation, "2d") / "fold_0" / VAL_PREDICTIONS / "consensus").mkdir()
    write_seg(RATER_A, PROPS, model_dir(cross_validation, "2d") / "fold_0" / VAL_PREDICTIONS / "consensus" / "c0.nii.gz")
    with pytest.raises(EvaluationInputError, match="no samples/c0.npz"):
        find_best_configuration(DS, folds=[0, 1, 3])


# ------------------------------------------------------------------ a tiny model's real predictions, run as written

@pytest.mark.slow  # predicts 5 folds of two configurations, then the instructions
def test_instructions_run_as_written(env_folders, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_NUM_PROCESSES, "1")  # the commands as written, without worker processes
    plans = tiny_plans()
    plans.configurations["2d_b"] = copy.deepcopy(plans.configurations["2d"])
    plans.configurations["2d_b"].diffusion.num_timesteps = 10  # another schedule: other samples from the same weights
    raw = env_folders["raw"] / DATASET
    write_raw_input(raw / "imagesTr", n_cases=5)
    write_dataset_json(raw, DatasetDescription(name="Tiny", channel_names={0: "MR"},
                                               labels={"background": 0, "lesion": 1}, raters=plans.raters,
                                               num_training=5, file_ending=".nii.gz"))
    cases = [f"case{i}" for i in range(5)]
    for i, case in enumerate(cases):
        _, props = read_images([raw / "imagesTr" / f"{case}_0000.nii.gz"])
        for k, r in enumerate(plans.raters):
            mask = np.zeros(props["shape"], np.uint8)
            mask[5:12 + i % 2, 8:20 + 2 * k] = 1
            write_seg(mask, props, raw / "labelsTr" / r / f"{case}.nii.gz")
    save_json([{"train": [c for c in cases if c != v], "val": [v]} for v in cases],
              env_folders["preprocessed"] / DATASET / "splits_final.json")
    for cfg in ("2d", "2d_b"):
        folder = write_model_folder(env_folders["results"], plans, folds=range(5), configuration=cfg)
        for fold, case in enumerate(cases):  # each fold predicts its held-out case, as the comparison does
            inp = tmp_path / f"held_out_{fold}"
            inp.mkdir(exist_ok=True)
            shutil.copyfile(raw / "imagesTr" / f"{case}_0000.nii.gz", inp / f"{case}_0000.nii.gz")
            predict_from_folder(inp, folder / f"fold_{fold}" / VAL_PREDICTIONS, DATASET, cfg, [fold], num_samples=2,
                                sampling_steps=2, rater_num_samples=1, save_samples=True, device="cpu")

    info = find_best_configuration(DATASET, folds=range(5))
    # the per-fold tables of diffoseg_evaluate hold the same numbers
    for cfg in ("2d", "2d_b"):
        folder = env_folders["results"] / DATASET / f"DiffOSegTrainer__DiffOSegPlans__{cfg}"
        per_case = [evaluate_folder(raw / "labelsTr", folder / f"fold_{f}" / VAL_PREDICTIONS)["per_case"][0]["GED"]
                    for f in range(5)]
        got = next(c for c in info["candidates"] if c["name"].endswith(f"__{cfg}"))
        assert got["GED"] == pytest.approx(np.mean(per_case))
        assert [got["per_fold"][str(f)]["GED"] for f in range(5)] == pytest.approx(per_case)
    stats = {c["name"]: c for c in info["candidates"]}
    assert min(stats.values(), key=lambda c: c["GED"])["GED_difference_to_lowest"] == 0.0
    assert stats[info["best"]]["equal_to_lowest_GED"]

    # the pick's commands and the ensemble's, as written, with the user's folders filled in
    commands = {"diffoseg_predict": predict_entrypoint.main, "diffoseg_ensemble": ensemble.main}
    pair = next(c for c in info["candidates"] if len(c["members"]) == 2)
    for n, written in enumerate({info["best"]: info["commands"], pair["name"]: pair["commands"]}.values()):
        out = tmp_path / f"run{n}"
        for line in written:
            argv = [a.replace("INPUT_FOLDER", str(raw / "imagesTr")).replace("OUTPUT_FOLDER", str(out))
                    for a in shlex.split(line)]
            commands[argv[0]](argv[1:])
        summary = evaluate_folder(raw / "labelsTr", out)
        assert summary["num_cases"] == 5 and math.isfinite(summary["metrics"]["GED"])
        assert (out / "disagreement" / "case0.json").is_file()
