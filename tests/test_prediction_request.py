"""One prediction path: a PredictionRequest, validated in one place, run by run_prediction for every method
(DiffOSeg and each baseline trainer), the method chosen from the trained model's checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest

from diffoseg_auto.evaluation.prediction_folder import load_samples_npz
from diffoseg_auto.inference.case_predictors import BaselineCasePredictor, DiffOSegCasePredictor, load_case_predictor
from diffoseg_auto.inference.model_loading import ModelLoadError
from diffoseg_auto.inference.prediction_request import PredictionRequest
from diffoseg_auto.inference.prediction_run import run_prediction
from diffoseg_auto.io.image_io import read_seg
from diffoseg_auto.network.baselines import BASELINE_NETWORKS
from diffoseg_auto.network.baselines.base import majority_labels
from diffoseg_auto.utilities.argument_checks import ArgumentError
from support.predictor_models import DATASET, tiny_plans, write_model_folder, write_raw_input

N = 3  # samples per case; > 2 raters, so the multi-head U-Net cycles its heads
IN_PROCESS = {"num_processes_preprocessing": 1, "num_processes_export": 1}


def _outputs(out, case):
    samples = load_samples_npz(out / "samples" / f"{case}.npz")
    consensus = read_seg(out / "consensus" / f"{case}.nii.gz")[0]
    raters = np.stack([read_seg(out / "raters" / r / f"{case}.nii.gz")[0] for r in ("r1", "r2")])
    return samples, consensus, raters


@pytest.mark.parametrize("trainer", ["DiffOSegTrainer", *BASELINE_NETWORKS])
def test_one_request_per_method_runs_through_run_prediction(trainer, env_folders, tmp_path):
    write_model_folder(env_folders["results"], tiny_plans(), stages=(1, 2) if trainer == "DiffOSegTrainer" else (1,),
                       trainer=trainer)
    # spacing 1 = the plans' target spacing and no zero border: preprocessing is the identity, so the exported
    # maps can be compared voxel by voxel with the samples
    write_raw_input(tmp_path / "input", spacing=(1.0, 1.0))
    out = tmp_path / "out"
    request = PredictionRequest(tmp_path / "input", out, DATASET, "2d", [0], trainer=trainer, num_samples=N,
                                sampling_steps=2, rater_num_samples=1, save_samples=True, device="cpu", **IN_PROCESS)
    assert run_prediction(request) == ["case0", "case1"]

    settings = json.loads((out / "prediction_settings.json").read_text())
    assert settings["raters"] == ["r1", "r2"] and settings["num_samples"] == N and settings["folds"] == [0]
    assert settings.get("trainer") == (None if trainer == "DiffOSegTrainer" else trainer)
    # every method's default: DiffOSeg follows the plans (mirroring planned off), the baselines mirror
    assert settings["use_mirroring"] == (trainer != "DiffOSegTrainer")
    for case in ("case0", "case1"):
        samples, consensus, raters = _outputs(out, case)
        assert samples.shape == (N, 20, 28) and raters.shape == (2, 20, 28)
        assert set(np.unique(samples)) <= {0, 1} and set(np.unique(raters)) <= {0, 1}
        np.testing.assert_array_equal(consensus, majority_labels(samples, 2))  # argmax of the mean one-hot
        if trainer == "ConsensusUNetTrainer":  # one deterministic map: N equal samples, every rater gets it
            assert all(np.array_equal(s, samples[0]) for s in samples)
            assert all(np.array_equal(r, samples[0]) for r in raters)
        elif trainer == "MultiHeadUNetTrainer":  # the samples are the rater heads, cycled
            for n in range(N):
                np.testing.assert_array_equal(samples[n], raters[n % 2])
        elif trainer == "ProbUNetTrainer":  # every rater gets the majority of the samples
            assert all(np.array_equal(r, majority_labels(samples, 2)) for r in raters)


def test_the_method_comes_from_the_checkpoints(env_folders, tmp_path):
    """-tr names the model folder; the checkpoints in it decide the method (here a folder given directly)."""
    folder = write_model_folder(env_folders["results"], tiny_plans(), stages=(1,), trainer="MultiHeadUNetTrainer")
    write_raw_input(tmp_path / "input", n_cases=1)
    request = PredictionRequest(tmp_path / "input", tmp_path / "out", DATASET, "2d", [0], model_folder=folder,
                                device="cpu", precision="fp32")
    predictor, plans = load_case_predictor(request, DATASET, folder, "cpu")
    assert isinstance(predictor, BaselineCasePredictor) and plans.raters == ["r1", "r2"]
    assert predictor.settings == {"trainer": "MultiHeadUNetTrainer", "num_samples": 2, "use_mirroring": True}
    assert predictor.raters == ["r1", "r2"] and predictor.description == "predict MultiHeadUNetTrainer"

    diffoseg = write_model_folder(env_folders["results"], tiny_plans(), stages=(1,))
    predictor, _ = load_case_predictor(request, DATASET, diffoseg, "cpu")
    assert isinstance(predictor, DiffOSegCasePredictor) and predictor.raters == []  # no Stage II: consensus only
    assert predictor.settings == {"num_samples": 2, "sampling_steps": 5, "rater_num_samples": 4,  # the plans'
                                  "use_mirroring": False, "precision": "fp32"}


def test_validate_reports_every_problem_at_once(tmp_path):
    request = PredictionRequest(tmp_path / "missing", tmp_path / "missing", 1, "2d", ["x", 0, "all"], num_samples=0,
                                step_size=1.5, num_processes_export=0, precision="fp8", continue_prediction=True,
                                overwrite=True)
    with pytest.raises(ArgumentError) as e:
        request.validate()
    assert str(e.value).splitlines() == [
        "--num_samples must be >= 1, got 0.",
        "-step_size must be in (0, 1], got 1.5.",
        "-nps must be >= 1, got 0.",
        "--precision must be one of auto, bf16, fp16, fp32, got 'fp8'.",
        "-f takes fold numbers or 'all', got ['x'].",
        "--continue_prediction and --overwrite exclude each other.",
        f"{tmp_path / 'missing'}: input folder does not exist (-i).",
        f"{tmp_path / 'missing'}: output folder must differ from the input folder (-o).",
    ]
    (tmp_path / "in").mkdir()
    PredictionRequest(tmp_path / "in", tmp_path / "out", 1, "2d", ["0", "all"]).validate()  # a good one passes


def test_the_request_stores_one_form_of_its_arguments(tmp_path):
    request = PredictionRequest(str(tmp_path / "in"), str(tmp_path / "out"), 1, "2d", ["0", 3, "all"], raters="r1",
                                model_folder=str(tmp_path / "model"))
    assert request.folds == (0, 3, "all") and request.raters == ("r1",)
    assert request.input_folder == tmp_path / "in" and request.model_folder == tmp_path / "model"
    assert PredictionRequest(tmp_path, tmp_path / "o", 1, "2d", "all").folds == ("all",)
    assert PredictionRequest(tmp_path, tmp_path / "o", 1, "2d", [0], num_processes_preprocessing=3,
                             num_processes_export=1).worker_counts() == (3, 1)
    with pytest.raises(TypeError):  # a misspelt option is not ignored
        PredictionRequest(tmp_path, tmp_path / "o", 1, "2d", [0], num_sample=2)
    with pytest.raises(TypeError):  # options by name only
        PredictionRequest(tmp_path, tmp_path / "o", 1, "2d", [0], "ProbUNetTrainer")


def test_planned_cost_is_printed_and_counts_every_network_evaluation(env_folders, tmp_path, capsys):
    write_model_folder(env_folders["results"], tiny_plans(), stages=(1, 2))
    write_raw_input(tmp_path / "input", spacing=(1.0, 1.0))
    request = PredictionRequest(tmp_path / "input", tmp_path / "out", DATASET, "2d", [0], num_samples=N,
                                sampling_steps=2, rater_num_samples=1, device="cpu", use_mirroring=False, **IN_PROCESS)
    run_prediction(request)
    # median image 16x16 = one 16x16 window; 2 steps x (3 samples + 2 prompts x 1 sample) = 10 per case
    assert ("planned cost: 2 case(s) x 10 network evaluations per median case [1 window(s) x 1 mirroring(s) x "
            "1 fold(s) x 2 steps x (3 samples + 2 prompt(s) x 1 samples)] = 20 evaluations") in capsys.readouterr().out
    dataset_name, folder = request.locate_model()
    predictor, _ = load_case_predictor(request, dataset_name, folder, "cpu")
    # the real 20x28 cases: 2 x 3 windows at step 0.5; mirroring on both axes multiplies by 4
    assert predictor.prediction_cost((20, 28)).network_evaluations == 6 * 10
    mirrored, _ = load_case_predictor(PredictionRequest(tmp_path / "input", tmp_path / "o2", DATASET, "2d", [0],
                                                        num_samples=N, sampling_steps=2, rater_num_samples=1,
                                                        device="cpu", use_mirroring=True), dataset_name, folder, "cpu")
    assert mirrored.prediction_cost((20, 28)).network_evaluations == 4 * 6 * 10


def test_a_stage2_learning_curve_point_predicts_with_the_final_stage1(env_folders, tmp_path):
    """-chk checkpoint_stage2_at_<F>.pth exists in stage2/ only: the consensus comes from the final Stage I (the one
    Stage II started from), the raters from that Stage II point."""
    import shutil

    from diffoseg_auto.results_layout import progress_checkpoint_name

    folder = write_model_folder(env_folders["results"], tiny_plans())
    point = progress_checkpoint_name(2, 0.5)
    shutil.copy(folder / "fold_0" / "stage2" / "checkpoint_final.pth", folder / "fold_0" / "stage2" / point)
    write_raw_input(tmp_path / "input", n_cases=1, spacing=(1.0, 1.0))
    common = dict(num_samples=N, sampling_steps=2, rater_num_samples=1, save_samples=True, device="cpu", **IN_PROCESS)
    run_prediction(PredictionRequest(tmp_path / "input", tmp_path / "final", DATASET, "2d", [0], **common))
    run_prediction(PredictionRequest(tmp_path / "input", tmp_path / "point", DATASET, "2d", [0],
                                     checkpoint_name=point, **common))
    for a, b in zip(_outputs(tmp_path / "final", "case0"), _outputs(tmp_path / "point", "case0")):
        np.testing.assert_array_equal(a, b)  # the copied point is the final Stage II: the same predictions
    with pytest.raises(ModelLoadError, match="checkpoint not found"):  # a name neither stage has is still refused
        load_case_predictor(PredictionRequest(tmp_path / "input", tmp_path / "x", DATASET, "2d", [0],
                                              checkpoint_name="checkpoint_nope.pth", device="cpu"),
                            DATASET, folder, "cpu")


def test_the_consensus_unet_saves_its_softmax_as_the_consensus_probabilities(env_folders, tmp_path):
    """Its N samples repeat one label map; --save_probabilities keeps the softmax behind it (calibration reads it)."""
    write_model_folder(env_folders["results"], tiny_plans(), stages=(1,), trainer="ConsensusUNetTrainer")
    write_raw_input(tmp_path / "input", n_cases=1, spacing=(1.0, 1.0))
    out = tmp_path / "out"
    run_prediction(PredictionRequest(tmp_path / "input", out, DATASET, "2d", [0], trainer="ConsensusUNetTrainer",
                                     num_samples=N, save_samples=True, save_probabilities=True, device="cpu",
                                     **IN_PROCESS))
    with np.load(out / "consensus" / "case0.npz") as z:
        probs = z["probabilities"].astype(np.float32)
    samples, consensus, _ = _outputs(out, "case0")
    assert probs.shape == (2, 20, 28) and np.allclose(probs.sum(0), 1, atol=2e-3)
    assert ((probs > 0.01) & (probs < 0.99)).any()  # soft, not the one-hot of its labels
    np.testing.assert_array_equal(np.argmax(probs, 0), consensus)
    np.testing.assert_array_equal(consensus, samples[0])
