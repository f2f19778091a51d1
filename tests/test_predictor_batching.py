"""Batched prediction (windows x mirrorings x samples/prompts per call, autocast) against the plain
per-window, per-sample loop it replaces."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
from diffoseg_auto.inference.batching import bytes_per_row, rows_per_call, split_work
from diffoseg_auto.inference.predictor import DiffOSegPredictor, PredictorSettings
from diffoseg_auto.inference.sliding_window import compute_gaussian, sliding_window_slicers
from support.predictor_models import TINY_NET_CLASSES as K, make_configuration
from support.predictor_models import tiny_cached_net as _tiny_net


def _flip(x, axes):
    return torch.flip(x, [a + 2 for a in axes]) if axes else x


def _reference_x0(net, image, x_t, t, raters, patch, mirrors):
    """The unbatched algorithm: every window, sample and mirroring on its own, float32."""
    windows = sliding_window_slicers(tuple(image.shape[1:]), patch, 0.5)
    gauss = compute_gaussian(patch)
    acc, wsum = torch.zeros_like(x_t), torch.zeros(image.shape[1:])
    for sl in windows:
        wsum[sl] += gauss
        for j in range(x_t.shape[0]):
            p = 0
            for axes in mirrors:
                img = _flip(image[None][(slice(None), slice(None), *sl)], axes)
                xw = _flip(x_t[j:j + 1][(slice(None), slice(None), *sl)], axes)
                p = p + _flip(torch.softmax(net(img, xw, t[j:j + 1], raters[j:j + 1]), 1), axes)
            acc[j][(slice(None), *sl)] += p[0] / len(mirrors) * gauss
    return acc / wsum


@pytest.mark.parametrize("max_batch", [1, 8, None])
def test_batched_x0_equals_the_per_window_loop(max_batch):
    cfg = make_configuration(patch=(16, 16), mirror_axes=(0, 1))
    net = _tiny_net(cfg)
    image = torch.from_numpy(np.random.default_rng(0).random((1, 24, 20)).astype(np.float32))
    n = 2
    x_t = torch.nn.functional.one_hot(torch.randint(0, K, (n, 24, 20), generator=torch.Generator().manual_seed(1)),
                                      K).movedim(-1, 1).float()
    t = torch.tensor([7, 7])
    raters = torch.tensor([0, 1])
    with torch.no_grad():
        expected = _reference_x0(net, image, x_t, t, raters, (16, 16), [(), (0,), (1,), (0, 1)])
        pred = DiffOSegPredictor(net, CategoricalDiffusion(K, 20), cfg, "cpu",
                                 PredictorSettings(max_batch=max_batch, precision="fp32"))
        windows = sliding_window_slicers((24, 20), (16, 16), 0.5)
        gauss = compute_gaussian((16, 16))
        wsum = torch.zeros(24, 20)
        for sl in windows:
            wsum[sl] += gauss
        got = pred.full_image_denoiser(image, windows, gauss, wsum.reciprocal(), raters, n)(x_t, t)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_bf16_prediction_is_close_to_float32():
    cfg = make_configuration(patch=(16, 16), mirror_axes=(0,))
    net = _tiny_net(cfg, seed=3)
    data = np.random.default_rng(2).random((1, 24, 20)).astype(np.float32)
    probs = {}
    for prec in ("fp32", "bf16"):
        pred = DiffOSegPredictor(net, CategoricalDiffusion(K, 20), cfg, "cpu", PredictorSettings(precision=prec))
        assert pred.amp_dtype == (torch.bfloat16 if prec == "bf16" else None)
        # the last step's x_0 probabilities of the same chain: the network's precision is the only difference
        image = torch.from_numpy(data)
        windows = sliding_window_slicers((24, 20), (16, 16), 0.5)
        gauss = compute_gaussian((16, 16))
        wsum = torch.zeros(24, 20)
        for sl in windows:
            wsum[sl] += gauss
        fn = pred.full_image_denoiser(image, windows, gauss, wsum.reciprocal(), torch.tensor([0, 1]), 2)
        x_t = torch.nn.functional.one_hot(torch.randint(0, K, (2, 24, 20), generator=torch.Generator().manual_seed(5)),
                                          K).movedim(-1, 1).float()
        with torch.no_grad():
            probs[prec] = fn(x_t, torch.tensor([3, 3]))
        assert probs[prec].dtype == torch.float32  # blending stays float32 under autocast
    assert torch.isfinite(probs["bf16"]).all()
    assert (probs["bf16"] - probs["fp32"]).abs().max() < 0.05
    torch.testing.assert_close(probs["bf16"].sum(1), torch.ones(2, 24, 20))


def test_split_work_balances_calls_and_respects_the_budget():
    assert split_work(9, 1, 10, 40) == (3, 10)     # 4 windows fit, 3 calls balanced to 3 windows each
    assert split_work(9, 1, 10, 1000) == (9, 10)   # everything in one call
    assert split_work(9, 4, 10, 20) == (1, 5)      # one window's 40 rows do not fit: samples split in 2
    assert split_work(2, 4, 3, 1) == (1, 1)        # below one row per mirroring: one sample at a time
    for w, m, n, cap in [(7, 2, 5, 23), (1, 8, 16, 64), (30, 1, 20, 100)]:
        wpc, spc = split_work(w, m, n, cap)
        assert wpc * m * spc <= max(cap, m)


def test_rows_per_call_follows_the_memory_budget():
    cfg = make_configuration(patch=(64, 64))
    per_row = bytes_per_row(cfg, 2)
    # light path widths max(4, f // 4) = [4, 4] at 64x64 and 32x32
    assert per_row == 4 * (2 * (4 * 64 * 64 + 4 * 32 * 32) + 4 * 2 * 4 * 64 * 64 + 4 * 2 * 64 * 64)
    cfg.inference.batch_memory_mb = 1
    assert rows_per_call(cfg, 2) == 2 ** 20 // per_row
    cfg.inference.batch_memory_mb = 4096
    assert rows_per_call(cfg, 2) == 4096 * 2 ** 20 // per_row
