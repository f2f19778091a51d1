"""Defects a GPU would show first, tested on the CPU: every trainer's autocast dtype, non-finite gradients under bf16
(alone and under 2-rank gloo DDP), native-bf16 detection, the end-of-stage wait under DDP, resuming with fewer GPUs,
and the Python API's device rule."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from diffoseg_auto.runtime import precision
from diffoseg_auto.training.finite_guard import NonFiniteTrainingError, raise_if_non_finite
from diffoseg_auto.training.trainer_registry import get_trainer_class
from diffoseg_auto.training.training_request import ScheduleOverrides, TrainingRequest
from support.toy_training import DATASET, tiny_plans

TRAINERS = ["DiffOSegTrainer", "ConsensusUNetTrainer", "MultiHeadUNetTrainer", "ProbUNetTrainer"]


def one_batch(plans, rng=np.random.default_rng(0)) -> dict:
    return {"data": rng.standard_normal((2, 1, 32, 32)).astype(np.float32),
            "seg": rng.integers(0, 2, (2, 3, 32, 32)).astype(np.uint8),
            "rater_mask": np.array([[True, True, False]] * 2)}


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize("prec", ["bf16", "fp32"])
def test_every_trainer_autocasts_in_its_own_dtype(trainer, prec, toy, tmp_path, monkeypatch):
    import diffoseg_auto.training.baselines.base_trainer as base_module
    import diffoseg_auto.training.diffusion_step as step_module

    # every trainer enters autocast through the one precision helper, with its own amp_dtype (on CUDA a bare
    # torch.autocast would mean fp16 whatever amp_dtype says)
    helper_calls = []
    for module in (step_module, base_module):
        monkeypatch.setattr(module, "autocast", lambda d, t: helper_calls.append(t) or precision.autocast(d, t))
    cls = get_trainer_class(trainer)
    tr = cls(tiny_plans(), TrainingRequest(DATASET, "2d", 0, num_workers=0, precision=prec, output_folder=tmp_path), 1,
             torch.device("cpu"))
    tr.initialize()
    tr.target_rng, tr.torch_gen = np.random.RandomState(0), torch.Generator().manual_seed(0)
    seen = []
    tr.network.register_forward_pre_hook(
        lambda m, a: seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
    tr.train_step(one_batch(tr.plans))
    assert seen and set(seen) == {tr.amp_dtype}
    assert helper_calls and set(helper_calls) == {tr.amp_dtype}
    assert tr.amp_dtype == (torch.bfloat16 if prec == "bf16" else None)
    assert tr.debug_info()["precision"] == prec


def test_a_nan_gradient_stops_bf16_training_before_the_step(toy, tmp_path):
    request = TrainingRequest(DATASET, "2d", 0, num_workers=0, precision="bf16", output_folder=tmp_path)
    tr = get_trainer_class("DiffOSegTrainer")(tiny_plans(), request, 1, torch.device("cpu"))
    tr.initialize()
    tr.target_rng, tr.torch_gen = np.random.RandomState(0), torch.Generator().manual_seed(0)
    assert not tr.grad_scaler.is_enabled()  # bf16: no scaler skips a bad step
    first = next(p for p in tr.network.parameters() if p.requires_grad)
    first.register_hook(lambda g: torch.full_like(g, float("nan")))  # finite loss, NaN gradient
    before = {k: v.clone() for k, v in tr.network.state_dict().items()}
    with pytest.raises(NonFiniteTrainingError, match="gradient norm nan"):
        tr.train_step(one_batch(tr.plans))
    for k, v in tr.network.state_dict().items():
        assert torch.equal(v, before[k]), k  # the weights did not change
    # with an enabled GradScaler (fp16) the scaler owns the gradient: only the loss is checked
    raise_if_non_finite(torch.tensor(1.0), torch.tensor(float("nan")), True, 0, 1, 0, tmp_path)
    with pytest.raises(NonFiniteTrainingError):
        raise_if_non_finite(torch.tensor(1.0), torch.tensor(float("nan")), False, 0, 1, 0, tmp_path)


DDP_NAN = """
import os, sys, time, torch
import torch.distributed as dist
from diffoseg_auto.training import ddp
from diffoseg_auto.training.finite_guard import NonFiniteTrainingError, raise_if_non_finite
ddp.init_from_env("cpu")
r = ddp.rank()
grad = torch.tensor(float("nan") if r == 1 else 1.0)  # only rank 1 sees the NaN
try:
    raise_if_non_finite(torch.tensor(0.5), grad, False, 3, 1, 0, sys.argv[1])
    print(f"rank {r} went on", flush=True)
except NonFiniteTrainingError as e:
    print(f"rank {r} stopped: {e}", flush=True)
ddp.cleanup()
"""

DDP_WAIT = """
import sys, time, datetime, torch
import torch.distributed as dist
from diffoseg_auto.training import ddp
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=3))  # a short default timeout
if ddp.rank() == 0:
    time.sleep(8)  # rank 0 validates alone, longer than the default group's timeout
ddp.wait_for_rank0()
print(f"rank {ddp.rank()} passed the wait", flush=True)
ddp.cleanup()
"""


def torchrun(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    f = tmp_path / "script.py"
    f.write_text(textwrap.dedent(script))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(f), *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_under_ddp_every_rank_stops_at_a_nan_on_one_rank(tmp_path):
    proc = torchrun(DDP_NAN, tmp_path, str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rank 0 stopped" in proc.stdout and "loss or gradient on another rank" in proc.stdout
    assert "rank 1 stopped" in proc.stdout and "gradient norm nan" in proc.stdout
    assert "went on" not in proc.stdout


@pytest.mark.slow
def test_waiting_ranks_outlast_a_validation_longer_than_the_group_timeout(tmp_path):
    proc = torchrun(DDP_WAIT, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rank 0 passed the wait" in proc.stdout and "rank 1 passed the wait" in proc.stdout


@pytest.mark.parametrize("capability, expected", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                                  ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_precision_asks_for_native_bf16(capability, expected):
    # V100 (7.0) and T4 (7.5) only emulate bf16: auto gives them fp16 with a GradScaler
    with mock.patch.object(torch.cuda, "get_device_capability", return_value=capability), \
            mock.patch.object(torch.cuda, "is_bf16_supported", return_value=True):
        assert precision.autocast_dtype("auto", torch.device("cuda", 0)) == expected
        if expected == torch.float16:
            with pytest.raises(precision.PrecisionError, match="no bf16 support"):
                precision.autocast_dtype("bf16", torch.device("cuda", 0))
            assert precision.grad_scaler(torch.device("cpu"), expected).is_enabled()


def test_resume_with_fewer_gpus_restores_what_fits(caplog):
    from diffoseg_auto.training import rng_state

    saved = [torch.ByteTensor([i]) for i in range(3)]  # streams of 3 GPUs
    restored = []
    with mock.patch.object(torch.cuda, "is_available", return_value=True), \
            mock.patch.object(torch.cuda, "device_count", return_value=1), \
            mock.patch.object(torch.cuda, "set_rng_state", lambda s, i: restored.append((int(s[0]), i))), \
            caplog.at_level(logging.WARNING, logger="diffoseg_auto.training.rng_state"):
        rng_state.restore_rng_state({"cuda": saved})
    assert restored == [(0, 0)]
    assert "dropped those of GPU(s) [1, 2]" in caplog.text


def test_python_api_uses_the_one_device_rule(toy, monkeypatch):
    from diffoseg_auto.training import run_training as rt

    seen = []
    monkeypatch.setattr(rt, "resolve_device", lambda d: seen.append(d) or torch.device("cpu"))
    rt.run_training(TrainingRequest(DATASET, "2d", 0, stage="1", schedule=ScheduleOverrides(num_epochs=1),
                                    final_validation=False, num_workers=0))
    assert seen == [None]  # None = CUDA when available, else the CPU (runtime/device.py)
