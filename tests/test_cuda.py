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

    if precision == "bf16" and torch.cuda.get_device_capability(0)[0] < 8:
        pytest.skip("this GPU has no native bf16")
    tr = DiffOSegTrainer(tiny_plans(), "2d", 0, DATASET, 1, torch.device("cuda", 0), num_workers=0, precision=precision)
    tr.initialize()
    tr._build_loaders()
    assert tr.amp_dtype == (torch.bfloat16 if precision == "bf16" else torch.float16)
    assert tr.grad_scaler.is_enabled() == (precision == "fp16")  # fp16 gradients need loss scaling
    before = next(tr.network.parameters()).detach().clone()
    tr.on_epoch_start()
    # the GradScaler starts at 2**16 and skips steps (halving the scale) while the scaled gradients overflow:
    # 3 steps could all be skipped, so train until one step was taken (at most 30)
    losses = []
    for _ in range(30):
        losses.append(tr.train_step(next(tr.mt_tr)))
        if not torch.equal(before, next(tr.network.parameters())):
            break
    assert all(np.isfinite(losses)) and not torch.equal(before, next(tr.network.parameters()))


def test_sampling_on_cuda_matches_cpu_x0_and_returns_labels():
    from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
    from diffoseg_auto.inference.predictor import DiffOSegPredictor
    from diffoseg_auto.inference.sliding_window import compute_gaussian, sliding_window_slicers

    cfg = make_configuration(patch=(16, 16), mirror_axes=(0, 1))
    data = np.random.default_rng(0).random((1, 24, 20)).astype(np.float32)
    windows = sliding_window_slicers((24, 20), (16, 16), 0.5)
    x_t = torch.nn.functional.one_hot(torch.randint(0, K, (2, 24, 20), generator=torch.Generator().manual_seed(1)),
                                      K).movedim(-1, 1).float()
    probs = {}
    # fp32 on Ampere and later runs convolutions in TF32 by default (10-bit mantissa): off for an fp32 comparison
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    for device in ("cpu", "cuda"):
        pred = DiffOSegPredictor(_tiny_net(cfg), CategoricalDiffusion(K, 20), cfg, device, precision="fp32")
        g = compute_gaussian((16, 16), device=device)
        ws = torch.zeros(24, 20, device=device)
        for sl in windows:
            ws[sl] += g
        with torch.no_grad():
            fn = pred.full_image_denoiser(torch.from_numpy(data).to(device), windows, g, ws.reciprocal(),
                                          torch.tensor([0, 1], device=device), 2)
            probs[device] = fn(x_t.to(device), torch.tensor([5, 5], device=device)).cpu()
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.testing.assert_close(probs["cuda"], probs["cpu"], atol=1e-4, rtol=1e-3)
    pred = DiffOSegPredictor(_tiny_net(cfg), CategoricalDiffusion(K, 20), cfg, "cuda")
    native = torch.cuda.get_device_capability(0)[0] >= 8  # auto: bf16 where native, fp16 on V100 / T4
    assert pred.amp_dtype == (torch.bfloat16 if native else torch.float16)
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
        assert ddp.mean_over_ranks(3.0, device) == 3.0 and ddp.broadcast_int(7, device) == 7
        ddp.cleanup()
        print("nccl ok")
    """))
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "29517"}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "nccl ok" in proc.stdout, proc.stderr[-3000:]
