"""Prediction: sliding-window geometry, whole-image diffusion sampling, export, diffoseg_predict."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from diffoseg_auto.errors import UserError
from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
from diffoseg_auto.inference.predictor import DiffOSegPredictor, PredictorSettings
from diffoseg_auto.inference.sliding_window import compute_gaussian, compute_steps_for_sliding_window, sliding_window_slicers
from diffoseg_auto.network.denoiser_base import DenoiserBase
from support.predictor_models import make_configuration, predict, tiny_plans, write_model_folder, write_raw_input


class ThresholdDenoiser(DenoiserBase):
    """Predicts x0 = (image > 0.5) with huge confidence, whatever x_t; counts encode/denoise rows."""

    def __init__(self, spatial_dims: int = 2, num_classes: int = 2, num_raters: int | None = None):
        super().__init__(1, num_classes, num_raters, spatial_dims)
        self.dummy = nn.Parameter(torch.zeros(()))
        self.encoded_rows = 0
        self.encode_calls = 0
        self.denoise_calls = 0

    def encode(self, image):
        self._check_image(image)
        self.encoded_rows += image.shape[0]
        self.encode_calls += 1
        return {"mask": (image[:, 0] > 0.5).long()}

    def denoise(self, cache, x_t, t, rater_id=None):
        self._check_inputs(x_t, t, rater_id)
        self.denoise_calls += 1
        mask = cache["mask"]
        assert mask.shape[0] == x_t.shape[0] and mask.shape[1:] == x_t.shape[2:]
        if rater_id is not None:  # rater k draws the mask shifted by k classes (to see the prompt arrive)
            mask = (mask + rater_id.view(-1, *[1] * self.spatial_dims)) % self.num_classes
        return 50.0 * nn.functional.one_hot(mask, self.num_classes).movedim(-1, 1).float()


# ------------------------------------------------------------------ sliding-window geometry

def test_gaussian_properties():
    g = compute_gaussian((16, 12))
    assert g.shape == (16, 12)
    assert float(g.max()) == pytest.approx(1.0)
    assert float(g.min()) > 0
    assert torch.allclose(g, g.flip(0)) and torch.allclose(g, g.flip(1))  # symmetric about the centre
    # separable Gaussian centred at (7.5, 5.5) with sigma = patch / 8 = (2, 1.5), divided by its
    # value at the nearest voxel (offset 0.5 on each axis)
    expected_corner = math.exp(-0.5 * ((7.5 ** 2 - 0.5 ** 2) / 2.0 ** 2 + (5.5 ** 2 - 0.5 ** 2) / 1.5 ** 2))
    assert float(g[0, 0]) == pytest.approx(expected_corner, rel=1e-5)
    assert int(g.argmax()) in (7 * 12 + 5, 7 * 12 + 6, 8 * 12 + 5, 8 * 12 + 6)


@pytest.mark.parametrize("size,patch,step", [((40, 16), (16, 16), 0.5), ((50, 33, 17), (16, 8, 17), 0.5), ((64,), (32,), 1.0),
                                             ((31, 29), (8, 8), 0.25)])
def test_sliding_window_covers_image(size, patch, step):
    steps = compute_steps_for_sliding_window(size, patch, step)
    for s, p, st in zip(size, patch, steps):
        assert len(st) == math.ceil((s - p) / (p * step)) + 1  # window count formula
        assert st[0] == 0 and st[-1] == s - p
    slicers = sliding_window_slicers(size, patch, step)
    assert len(slicers) == int(np.prod([len(s) for s in steps]))
    cover = np.zeros(size, dtype=int)
    for sl in slicers:
        cover[sl] += 1
    assert cover.min() >= 1


def test_slice_tile_gives_one_window_per_slice():
    assert compute_steps_for_sliding_window((5, 32, 32), (1, 32, 16), 0.5) == [[0, 1, 2, 3, 4], [0], [0, 8, 16]]


def test_sliding_window_rejects_bad_input():
    with pytest.raises(ValueError, match="smaller than the patch"):
        compute_steps_for_sliding_window((8, 8), (16, 16), 0.5)
    with pytest.raises(ValueError, match="step_size"):
        compute_steps_for_sliding_window((16, 16), (16, 16), 0.0)


# ------------------------------------------------------------------ predictor

def _blob_image(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((1, *shape)).astype(np.float32)


def test_known_x0_gives_exact_mask_over_several_windows_with_mirroring():
    cfg = make_configuration(patch=(16, 16), mirror_axes=(0, 1))
    net = ThresholdDenoiser()
    data = _blob_image((40, 24))
    pred = DiffOSegPredictor(net, CategoricalDiffusion(2, 20), cfg, "cpu", PredictorSettings(use_mirroring=True, step_size=0.5))
    samples = pred.sample_case(data, num_samples=3, sampling_steps=5, seed=1)
    assert samples.shape == (3, 40, 24) and samples.dtype == np.uint8
    expected = (data[0] > 0.5).astype(np.uint8)
    for s in samples:
        np.testing.assert_array_equal(s, expected)


def test_encode_once_per_window_mirror_fold():
    cfg = make_configuration(patch=(16, 16), mirror_axes=(0, 1))
    nets = [ThresholdDenoiser(), ThresholdDenoiser()]
    data = _blob_image((40, 24))
    n_windows = len(sliding_window_slicers((40, 24), (16, 16), 0.5))
    assert n_windows == 4 * 2  # ceil((40-16)/8)+1 by ceil((24-16)/8)+1
    # 16 rows per call = 2 windows x 4 mirrorings x 2 samples
    pred = DiffOSegPredictor(nets, CategoricalDiffusion(2, 20), cfg, "cpu", PredictorSettings(use_mirroring=True, max_batch=16))
    steps = 4
    samples = pred.sample_case(data, num_samples=2, sampling_steps=steps)
    np.testing.assert_array_equal(samples[0], (data[0] > 0.5))
    n_chunks = math.ceil(n_windows / 2)
    for net in nets:
        assert net.encoded_rows == n_windows * 4  # every window x 4 mirrorings, once for all steps and samples
        assert net.encode_calls == n_chunks  # the 4 mirrorings of a chunk are one encoder batch
        assert net.denoise_calls == n_chunks * steps  # windows x mirrorings x samples in one call per chunk


def test_image_smaller_than_patch_is_padded_and_cropped_back():
    cfg = make_configuration(patch=(16, 16), mirror_axes=())
    data = _blob_image((10, 13), seed=3)
    pred = DiffOSegPredictor(ThresholdDenoiser(), CategoricalDiffusion(2, 20), cfg, "cpu")
    samples = pred.sample_case(data, 2, 3)
    assert samples.shape == (2, 10, 13)
    np.testing.assert_array_equal(samples[1], data[0] > 0.5)


def test_stage2_rater_prompt_and_rater_checks():
    cfg = make_configuration(patch=(16, 16), mirror_axes=(1,))
    data = _blob_image((16, 20), seed=4)
    pred = DiffOSegPredictor(ThresholdDenoiser(num_classes=3, num_raters=2), CategoricalDiffusion(3, 20), cfg, "cpu")
    s = pred.sample_case(data, 1, 3, rater_id=1)
    np.testing.assert_array_equal(s[0], (data[0] > 0.5).astype(np.uint8) + 1)
    with pytest.raises(ValueError, match="rater_id in 0..1"):
        pred.sample_case(data, 1, 3)
    stage1 = DiffOSegPredictor(ThresholdDenoiser(), CategoricalDiffusion(2, 20), cfg, "cpu")
    with pytest.raises(ValueError, match="Stage I"):
        stage1.sample_case(data, 1, 3, rater_id=0)


def test_2d_configuration_on_3d_data_slices():
    cfg = make_configuration(patch=(16, 16), mirror_axes=(0, 1), slice_axis=0)
    net = ThresholdDenoiser(spatial_dims=2)
    data = _blob_image((5, 16, 24), seed=5)
    pred = DiffOSegPredictor(net, CategoricalDiffusion(2, 20), cfg, "cpu")
    samples = pred.sample_case(data, 2, 3)
    assert samples.shape == (2, 5, 16, 24)
    np.testing.assert_array_equal(samples[0], data[0] > 0.5)
    assert net.encoded_rows == 5 * 2 * 4  # 5 slices x 2 windows per slice x 4 mirrorings


def test_2d_configuration_on_3d_data_slice_axis_2():
    cfg = make_configuration(patch=(8, 8), mirror_axes=(), slice_axis=2)
    net = ThresholdDenoiser(spatial_dims=2)
    data = _blob_image((8, 12, 3), seed=6)
    samples = DiffOSegPredictor(net, CategoricalDiffusion(2, 20), cfg, "cpu").sample_case(data, 1, 2)
    np.testing.assert_array_equal(samples[0], data[0] > 0.5)
    assert net.encoded_rows == 3 * 2


class RandomDenoiser(ThresholdDenoiser):
    """x0 prediction depends on x_t (so the chain's randomness shows in the samples)."""

    def denoise(self, cache, x_t, t, rater_id=None):
        self._check_inputs(x_t, t, rater_id)
        return 0.5 * x_t + 0.1 * cache["mask"][:, None].float()


def test_deterministic_given_seed():
    cfg = make_configuration(patch=(16, 16), mirror_axes=(0,))
    data = _blob_image((24, 24), seed=7)
    pred = DiffOSegPredictor(RandomDenoiser(num_classes=3), CategoricalDiffusion(3, 20), cfg, "cpu")
    a = pred.sample_case(data, 4, 5, seed=11)
    b = pred.sample_case(data, 4, 5, seed=11)
    c = pred.sample_case(data, 4, 5, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])  # samples differ from each other
    # the batching layout does not change the result
    pred_small = DiffOSegPredictor(RandomDenoiser(num_classes=3), CategoricalDiffusion(3, 20), cfg, "cpu",
                                   PredictorSettings(max_batch=1))
    np.testing.assert_array_equal(pred_small.sample_case(data, 4, 5, seed=11), a)


def test_wrong_data_dimensionality_is_a_clear_error():
    cfg = make_configuration(patch=(16, 16))
    pred = DiffOSegPredictor(ThresholdDenoiser(), CategoricalDiffusion(2, 20), cfg, "cpu")
    with pytest.raises(ValueError, match="3 spatial dims but the configuration is 2d"):
        pred.sample_case(np.zeros((1, 4, 16, 16), np.float32), 1, 2)


# ------------------------------------------------------------------ export helpers

def test_uncertainty_and_sample_packing_values():
    from diffoseg_auto.inference.export_prediction import entropy, mean_one_hot, pack_samples, uncertainty_map, unpack_samples

    samples = np.array([[[0, 1]], [[0, 1]], [[0, 0]], [[0, 1]]], dtype=np.uint8)  # (4, 1, 2)
    probs = mean_one_hot(samples, 2)
    np.testing.assert_allclose(probs[:, 0, 1], [0.25, 0.75])
    ent = entropy(probs)
    assert ent[0, 0] == 0.0  # all samples agree
    assert ent[0, 1] == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel=1e-6)
    png = uncertainty_map(np.array([[0.5, 1.0], [0.5, 0.0]], np.float32), ".png")
    assert png.dtype == np.uint8 and png.tolist() == [255, 0]
    assert uncertainty_map(probs, ".nii.gz").dtype == np.float32
    packed = pack_samples(samples, 2)
    assert set(packed) == {"packed", "shape"}
    np.testing.assert_array_equal(unpack_samples(packed), samples)
    three = pack_samples(samples * 2, 3)
    np.testing.assert_array_equal(unpack_samples(three), samples * 2)


# ------------------------------------------------------------------ end to end: model folder -> diffoseg_predict

@pytest.mark.slow
def test_predict_from_folder_end_to_end_geometry_and_outputs(env_folders, tmp_path):
    from diffoseg_auto.evaluation.prediction_folder import load_samples_npz
    from diffoseg_auto.io.image_io import geometry_matches, read_images, read_seg

    write_model_folder(env_folders["results"], tiny_plans())
    write_raw_input(tmp_path / "input")
    cases = predict(env_folders, tmp_path, save_samples=True, save_probabilities=True)
    assert cases == ["case0", "case1"]
    out = tmp_path / "out"
    for case in cases:
        _, in_props = read_images([tmp_path / "input" / f"{case}_0000.nii.gz"])
        assert in_props["shape"] == [20, 28]
        cons, p = read_seg(out / "consensus" / f"{case}.nii.gz")
        assert geometry_matches(p, in_props) == []  # size, spacing, origin, direction of the input
        assert p["spacing"] == pytest.approx([0.5, 0.8]) and p["origin"] == pytest.approx([3.0, -2.0])
        with np.load(out / "consensus" / f"{case}.npz") as z:
            probs = z["probabilities"]
        assert probs.dtype == np.float16 and probs.shape == (2, 20, 28)
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=2e-3)
        np.testing.assert_array_equal(cons, probs.astype(np.float32).argmax(0))
        unc, pu = read_seg(out / "uncertainty" / f"{case}.nii.gz")
        assert unc.dtype == np.float32 and geometry_matches(pu, in_props) == []
        assert unc.min() >= 0 and unc.max() <= math.log(2) + 1e-5
        samples = load_samples_npz(out / "samples" / f"{case}.npz")
        assert samples.shape == (3, 20, 28) and set(np.unique(samples)) <= {0, 1}
        for r in ("r1", "r2"):  # Stage II exists: all raters by default
            rs, pr = read_seg(out / "raters" / r / f"{case}.nii.gz")
            assert geometry_matches(pr, in_props) == [] and set(np.unique(rs)) <= {0, 1}
    # reproducible: a second run with the same seed gives the same samples
    first = load_samples_npz(out / "samples" / "case0.npz")
    predict(env_folders, tmp_path, save_samples=True, raters="none", overwrite=True)
    np.testing.assert_array_equal(load_samples_npz(out / "samples" / "case0.npz"), first)
    assert not (out / "raters").exists()  # --overwrite cleared the first run's Stage II files


def test_predict_raters_without_stage2_is_a_clear_error(env_folders, tmp_path):
    from diffoseg_auto.inference.prediction_request import PredictionError

    write_model_folder(env_folders["results"], tiny_plans(), stages=(1,))
    write_raw_input(tmp_path / "input", n_cases=1)
    with pytest.raises(PredictionError, match="no Stage II"):
        predict(env_folders, tmp_path, raters=["r1"])
    with pytest.raises(PredictionError, match="unknown rater"):
        predict(env_folders, tmp_path, raters=["nobody"])
    assert predict(env_folders, tmp_path, raters="none") == ["case0"]  # consensus still works
    assert not (tmp_path / "out" / "raters").exists()
    assert (tmp_path / "out" / "consensus" / "case0.nii.gz").is_file()


def test_predict_missing_channel_error_names_the_file(env_folders, tmp_path):
    from diffoseg_auto.dataset.dataset_errors import DatasetFormatError

    write_model_folder(env_folders["results"], tiny_plans(), stages=(1,))
    write_raw_input(tmp_path / "input", n_cases=1)
    (tmp_path / "input" / "case0_0000.nii.gz").rename(tmp_path / "input" / "case0_0001.nii.gz")
    with pytest.raises(DatasetFormatError, match="case0_0000.nii.gz"):
        predict(env_folders, tmp_path, raters="none")


def test_checkpoint_of_another_dataset_is_a_clear_error(env_folders, tmp_path):
    from diffoseg_auto.inference.model_loading import ModelLoadError

    write_model_folder(env_folders["results"], tiny_plans(), stages=(1,), trained_on="Dataset902_Other")
    write_raw_input(tmp_path / "input", n_cases=1)
    with pytest.raises(ModelLoadError, match="trained on 'Dataset902_Other', not on 'Dataset901_Tiny'"):
        predict(env_folders, tmp_path, raters="none")


def test_load_trained_model_errors_and_ensemble(env_folders):
    from diffoseg_auto.inference.model_loading import ModelLoadError, load_trained_model

    folder = write_model_folder(env_folders["results"], tiny_plans(), stages=(1,), folds=(0, 1))
    nets, plans, cfg_name, diffusion = load_trained_model(folder, [0, 1], 1)
    assert len(nets) == 2 and cfg_name == "2d" and plans.raters == ["r1", "r2"]
    assert diffusion.num_classes == 2 and diffusion.num_timesteps == 20
    assert not all(torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()))
    with pytest.raises(ModelLoadError, match="no Stage II model for fold 0"):
        load_trained_model(folder, [0], 2)
    with pytest.raises(ModelLoadError, match="fold 3 was not trained"):
        load_trained_model(folder, [3], 1)


def test_cli_main_runs_and_reports_errors_cleanly(env_folders, tmp_path):
    from diffoseg_auto.inference.predict_entrypoint import main

    write_model_folder(env_folders["results"], tiny_plans(), stages=(1,))
    write_raw_input(tmp_path / "input", n_cases=1)
    base = ["-i", str(tmp_path / "input"), "-o", str(tmp_path / "out"), "-d", "901", "-c", "2d", "-f", "0",
            "-device", "cpu", "--num_samples", "2", "--sampling_steps", "2", "-npp", "1", "-nps", "1", "--disable_tta"]
    with pytest.raises(UserError, match="no Stage II"):
        main(base + ["--raters", "all"])
    main(base)  # default --raters: none, because no Stage II model exists
    assert (tmp_path / "out" / "consensus" / "case0.nii.gz").is_file()
    assert (tmp_path / "out" / "uncertainty" / "case0.nii.gz").is_file()


@pytest.mark.slow
def test_worker_processes_give_the_same_outputs(env_folders, tmp_path):
    """-npp 2 / -nps 2 (spawned workers) write exactly what the in-process path writes."""
    from diffoseg_auto.evaluation.prediction_folder import load_samples_npz

    write_model_folder(env_folders["results"], tiny_plans(), stages=(1,))
    write_raw_input(tmp_path / "input", n_cases=3)
    predict(env_folders, tmp_path, save_samples=True, raters="none", num_processes_preprocessing=2, num_processes_export=2)
    parallel = {c: load_samples_npz(tmp_path / "out" / "samples" / f"{c}.npz") for c in ("case0", "case1", "case2")}
    predict(env_folders, tmp_path, save_samples=True, raters="none", overwrite=True)
    for c, s in parallel.items():
        np.testing.assert_array_equal(load_samples_npz(tmp_path / "out" / "samples" / f"{c}.npz"), s)
