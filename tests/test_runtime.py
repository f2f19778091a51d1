"""Device choice, mixed precision and torch.compile switches (CPU side; CUDA tests are marked `cuda`)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffoseg_auto.errors import UserError
from diffoseg_auto.runtime.device import DeviceUnavailableError, default_device_name, resolve_device
from diffoseg_auto.runtime.precision import PrecisionError, autocast_dtype, cpu_has_native_bf16, grad_scaler
from diffoseg_auto.training.trainer import DiffOSegTrainer
from diffoseg_auto.training.training_request import TrainingRequest
from diffoseg_auto.cli.console import run_command
from support.toy_training import DATASET, tiny_plans

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")


@no_cuda
def test_default_device_and_missing_cuda_is_a_user_error():
    assert default_device_name() == "cpu" and resolve_device(None) == torch.device("cpu")
    with pytest.raises(DeviceUnavailableError, match="no CUDA GPU is visible") as e:
        resolve_device("cuda")
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)
    with pytest.raises(DeviceUnavailableError, match="unknown device"):
        resolve_device("tpu")


@no_cuda
@pytest.mark.parametrize("command", ["train", "predict"])
def test_cli_device_cuda_without_gpu_prints_one_line(command, capsys, tmp_path):
    if command == "train":
        from diffoseg_auto.training.run_training import main
        argv = ["1", "2d", "0", "-device", "cuda"]
    else:
        from diffoseg_auto.inference.predict_entrypoint import main
        # an existing input folder: the request's every other problem would be listed too
        argv = ["-i", str(tmp_path), "-o", str(tmp_path / "out"), "-d", "1", "-c", "2d", "-f", "0", "-device", "cuda"]
    capsys.readouterr()
    assert run_command(f"diffoseg_{command}", main, argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip() == f"diffoseg_{command}: error: -device cuda: no CUDA GPU is visible on this machine. Use -device cpu."


def test_precision_rules_on_cpu():
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if cpu_has_native_bf16() else None)
    with pytest.raises(PrecisionError, match="CUDA only"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(PrecisionError, match="use one of"):
        autocast_dtype("int8", cpu)
    assert not grad_scaler(cpu, torch.bfloat16).is_enabled()  # bf16 needs no loss scaling


def test_plans_reject_an_unknown_precision():
    from diffoseg_auto.plans.plans import PlansValidationError, plans_from_dict

    d = tiny_plans().to_dict()
    d["configurations"]["2d"]["training"]["precision"] = "half"
    with pytest.raises(PlansValidationError, match="precision must be auto, bf16, fp16 or fp32"):
        plans_from_dict(d)
    d["configurations"]["2d"]["training"]["precision"] = "auto"
    d["configurations"]["2d"]["inference"]["windows_per_batch"] = 4  # retired field of older plans: still loads
    assert plans_from_dict(d).configurations["2d"].inference.batch_memory_mb == 2048


def _trainer(precision: str, compile_network: bool = False) -> DiffOSegTrainer:
    request = TrainingRequest(DATASET, "2d", 0, num_workers=0, precision=precision, compile_network=compile_network)
    tr = DiffOSegTrainer(tiny_plans(), request, 1, torch.device("cpu"))
    tr.initialize()
    tr._build_loaders()
    return tr


def test_bf16_autocast_training_loss_is_finite_and_close_to_fp32(toy):
    fp32, bf16 = _trainer("fp32"), _trainer("bf16")
    assert fp32.amp_dtype is None and bf16.amp_dtype == torch.bfloat16
    bf16.network.load_state_dict(fp32.network.state_dict())
    losses = {}
    for name, tr in (("fp32", fp32), ("bf16", bf16)):
        tr.on_epoch_start()  # same seeds: same batch, targets, timesteps and noise
        batch = next(tr.mt_tr)
        with torch.no_grad():
            losses[name] = float(tr._loss(batch, tr.network))
    assert np.isfinite(losses["bf16"]) and losses["fp32"] > 0
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
    before = next(bf16.network.parameters()).detach().clone()
    bf16.on_epoch_start()
    loss = bf16.train_step(next(bf16.mt_tr))
    assert np.isfinite(loss) and not torch.equal(before, next(bf16.network.parameters()))
    assert all(p.dtype == torch.float32 for p in bf16.network.parameters())  # autocast keeps float32 master weights


@pytest.mark.slow
def test_compile_flag_compiles_the_predictor_denoiser_and_keeps_its_output():
    """torch.compile works on the CPU (inductor + the system C++ compiler); tens of seconds on 2 cores."""
    from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
    from diffoseg_auto.inference.predictor import DiffOSegPredictor, PredictorSettings
    from support.predictor_models import TINY_NET_CLASSES as K, make_configuration, tiny_cached_net as _tiny_net

    cfg = make_configuration(patch=(16, 16), mirror_axes=())
    net = _tiny_net(cfg)
    data = np.random.default_rng(0).random((1, 16, 16)).astype(np.float32)
    plain = DiffOSegPredictor(net, CategoricalDiffusion(K, 20), cfg, "cpu", PredictorSettings(precision="fp32"))
    compiled = DiffOSegPredictor(net, CategoricalDiffusion(K, 20), cfg, "cpu",
                                 PredictorSettings(precision="fp32", compile_network=True))
    assert type(compiled._denoise[0]).__name__ != "method" and plain._denoise[0] == net.denoise
    a = plain.sample_case(data, 2, 3, rater_id=[0, 1], seed=4)
    b = compiled.sample_case(data, 2, 3, rater_id=[0, 1], seed=4)
    assert (a == b).mean() > 0.99  # same chain up to float reordering in the fused kernels


def test_compile_flag_wraps_only_the_training_forward(toy):
    tr = _trainer("fp32", compile_network=True)
    assert isinstance(tr.ddp_network, torch._dynamo.eval_frame.OptimizedModule)
    assert tr.ddp_network._orig_mod is tr.network and not isinstance(tr.network, torch._dynamo.eval_frame.OptimizedModule)
    assert "_orig_mod" not in " ".join(tr.checkpoint_dict()["raw_network_weights"])  # checkpoints keep plain names
