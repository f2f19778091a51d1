"""CUDA paths (run on a GPU machine with `pytest -m cuda`; skipped without a GPU): an AMP training step
in bf16 and in fp16 with a GradScaler, windowed sampling under autocast, and DDP over NCCL."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from support.predictor_models import TINY_NET_CLASSES as K, make_configuration, tiny_cached_net as _tiny_net
from support.toy_training import DATASET, tiny_plans

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_training_step_on_cuda(toy, precision):
    from diffoseg_auto.training.trainer import DiffOSegTrainer

    from diffoseg_auto.training.training_request import TrainingRequest

    tr = DiffOSegTrainer(tiny_plans(), TrainingRequest(DATASET, "2d", 0, num_workers=0, precision=precision), 1,
                         torch.device("cuda", 0))
    tr.initialize()
    tr._build_loaders()
    assert tr.amp_dtype == (torch.bfloat16 if precision == "bf16" else torch.float16)
    assert tr.grad_scaler.is_enabled() == (precision == "fp16")  # fp16 gradients need loss scaling
    tr.on_epoch_start()
    applied, losses = 0, []
    # the GradScaler starts at 2**16 and skips every step whose fp16 gradients overflow (halving the scale), so a
    # fixed few steps may all be skipped: train until one step changed the weights
    for _ in range(30):
        before = next(tr.network.parameters()).detach().clone()
        losses.append(tr.train_step(next(tr.mt_tr)))
        applied += not torch.equal(before, next(tr.network.parameters()))
        if applied:
            break
    assert all(np.isfinite(losses)) and applied == 1
    if precision == "bf16":
        assert len(losses) == 1  # no scaler: the first step is applied


@pytest.fixture
def ieee_fp32():
    """fp32 convolutions and matrix products in IEEE float32: Ampere and Hopper run fp32 convolutions in TF32 (a
    10-bit mantissa) by default, which misses a CPU comparison at 1e-4."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9: only the new API (mixing both raises)
        matmul = torch.backends.cuda.matmul
        saved = conv.fp32_precision, matmul.fp32_precision
        conv.fp32_precision = matmul.fp32_precision = "ieee"
        yield
        conv.fp32_precision, matmul.fp32_precision = saved
    else:
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        yield
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_sampling_on_cuda_matches_cpu_x0_and_returns_labels(ieee_fp32):
    from diffoseg_auto.runtime.precision import cuda_has_native_bf16

    from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
    from diffoseg_auto.inference.predictor import DiffOSegPredictor, PredictorSettings
    from diffoseg_auto.inference.sliding_window import compute_gaussian, sliding_window_slicers

    cfg = make_configuration(patch=(16, 16), mirror_axes=(0, 1))
    data = np.random.default_rng(0).random((1, 24, 20)).astype(np.float32)
    windows = sliding_window_slicers((24, 20), (16, 16), 0.5)
    x_t = torch.nn.functional.one_hot(torch.randint(0, K, (2, 24, 20), generator=torch.Generator().manual_seed(1)),
                                      K).movedim(-1, 1).float()
    probs = {}
    for device in ("cpu", "cuda"):
        pred = DiffOSegPredictor(_tiny_net(cfg), CategoricalDiffusion(K, 20), cfg, device,
                                 PredictorSettings(precision="fp32"))
        g = compute_gaussian((16, 16), device=device)
        ws = torch.zeros(24, 20, device=device)
        for sl in windows:
            ws[sl] += g
        with torch.no_grad():
            fn = pred.full_image_denoiser(torch.from_numpy(data).to(device), windows, g, ws.reciprocal(),
                                          torch.tensor([0, 1], device=device), 2)
            probs[device] = fn(x_t.to(device), torch.tensor([5, 5], device=device)).cpu()
    torch.testing.assert_close(probs["cuda"], probs["cpu"], atol=1e-4, rtol=1e-3)
    pred = DiffOSegPredictor(_tiny_net(cfg), CategoricalDiffusion(K, 20), cfg, "cuda")  # auto: bf16 where native
    assert pred.amp_dtype == (torch.bfloat16 if cuda_has_native_bf16(pred.device) else torch.float16)
    labels = pred.sample_case(data, 3, 4, rater_id=[0, 1, 1], seed=2)
    assert labels.shape == (3, 24, 20) and labels.dtype == np.uint8 and labels.max() < K


def test_ddp_uses_nccl_on_cuda_in_a_single_process(tmp_path):
    script = tmp_path / "nccl.py"
    script.write_text(textwrap.dedent("""
        import torch, torch.distributed as dist
        from diffoseg_auto.training import ddp
        device = ddp.init_from_env("cuda")
        assert dist.get_backend() == "nccl", dist.get_backend()
        assert device == torch.device("cuda", 0)
        assert ddp.mean_over_ranks(3.0, device) == 3.0 and ddp.broadcast_float(7.5, device) == 7.5
        ddp.cleanup()
        print("nccl ok")
    """))
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "29517"}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "nccl ok" in proc.stdout, proc.stderr[-3000:]
