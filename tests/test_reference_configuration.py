"""The paper's reference configuration: values, plans round trip, network build/forward, CLI."""
from __future__ import annotations

import json

import pytest
import torch

from diffoseg_auto.cli.console import run_command
from diffoseg_auto.plans.network_arguments import denoiser_from_plans
from diffoseg_auto.network.reference_openai import AttentionBlock, ReferenceOpenAIUNet
from diffoseg_auto.plans.plans import (ArchitecturePlan, ConfigurationPlan, Plans, PlansValidationError, load_plans,
                                       save_plans)
from planners.reference_configuration import add_reference_configuration, main

torch.set_num_threads(2)
DATASET = "Dataset020_LIDC"


def base_plans(patch: list[int] | None = None, dims: int = 2) -> Plans:
    """A planner-like 2d configuration: 5 stages of stride 2, nnU-Net-style settings."""
    patch = patch or [128] * dims
    n = 5
    arch = ArchitecturePlan(
        n_stages=n, features_per_stage=[32, 64, 128, 256, 256], kernel_sizes=[[3] * dims] * n,
        strides=[[1] * dims] + [[2] * dims] * (n - 1), n_conv_per_stage=[2] * n, n_conv_per_stage_decoder=[2] * (n - 1),
        num_prompts=4, prompt_dim=8)
    cfg = ConfigurationPlan(data_identifier="DiffOSegPlans_2d", spatial_dims=dims, patch_size=patch, batch_size=40,
                            spacing=[1.0] * dims, median_image_size_in_voxels=patch, normalization_schemes=["zscore"],
                            use_mask_for_norm=[False], resampling_order_data=3, resampling_order_seg=1,
                            architecture=arch, notes={"planner": "base"})
    cfg.training.ema_decay = 0.995
    cfg.training.x0_ce_weight = 0.1  # as the planner: the reference must reset it to the paper's 0
    return Plans(dataset_name=DATASET, plans_name="DiffOSegPlans", num_classes=2, raters=[f"rater{k}" for k in range(4)],
                 num_input_channels=1, original_median_spacing=[1.0] * dims, original_median_shape=patch,
                 foreground_intensity_properties_per_channel={}, configurations={"2d": cfg})


def test_values_of_the_added_configuration():
    plans = add_reference_configuration(base_plans())
    base, ref = plans.configurations["2d"], plans.configurations["2d_paper_reference"]
    a = ref.architecture
    assert a.denoiser == "reference_openai"
    assert a.reference == {"base_channels": 32, "channel_mult": [1, 1, 2, 3, 4], "num_res_blocks": 2,
                           "num_heads": 4, "attention_resolutions": [16, 8]}
    assert ref.diffusion.num_timesteps == 250 and ref.diffusion.sampling_steps == 250
    assert ref.diffusion.schedule == "cosine" and ref.diffusion.schedule_shift == 1.0
    t = ref.training
    assert (t.optimizer, t.initial_lr, t.weight_decay, t.lr_schedule, t.poly_exponent) == ("adam", 1e-4, 0.0, "poly", 1.0)
    assert ref.stage2.initial_lr == 1e-4
    assert t.x0_ce_weight == 0.0  # the paper trains with the KL alone
    assert ref.batch_size == 12 and ref.patch_size == [128, 128]
    assert t.consensus_target == "intersection" and "intersection" in ref.notes["consensus_target"]
    assert ref.stage2.prompt_block == "paper" and base.stage2.prompt_block == "residual"
    # data settings and EMA come from the base: the same preprocessed data is reused
    assert ref.data_identifier == base.data_identifier == "DiffOSegPlans_2d"
    assert ref.spacing == base.spacing and ref.normalization_schemes == base.normalization_schemes
    assert t.ema_decay == 0.995 and t.num_epochs == base.training.num_epochs
    # the base is untouched
    assert base.architecture.denoiser == "cached_encoder" and base.batch_size == 40 and base.training.optimizer == "adamw"
    assert base.notes == {"planner": "base"}


def test_base_patch_other_than_128_is_kept_and_noted():
    ref = add_reference_configuration(base_plans([96, 160]), name="ref").configurations["ref"]
    assert ref.patch_size == [96, 160]
    assert ref.architecture.reference["attention_resolutions"] == [12, 6]  # 1/8 and 1/16 of the patch
    assert "[96, 160]" in ref.notes["patch_size"]


def test_clear_errors():
    with pytest.raises(PlansValidationError, match="not divisible by 16"):
        add_reference_configuration(_plans_with_patch([72, 128]))
    with pytest.raises(PlansValidationError, match="3D"):
        add_reference_configuration(base_plans(dims=3), "2d")
    with pytest.raises(PlansValidationError, match="Available"):
        add_reference_configuration(base_plans(), "3d_fullres")
    with pytest.raises(PlansValidationError, match="own name"):
        add_reference_configuration(base_plans(), "2d", "2d")


def _plans_with_patch(patch: list[int]) -> Plans:
    p = base_plans()
    cfg = p.configurations["2d"]
    cfg.patch_size = patch
    cfg.architecture.strides = [[1, 1]] + [[2, 2]] * 3 + [[1, 1]]  # 72 is divisible by 8 only
    return p


def test_plans_file_round_trip(tmp_path):
    path = tmp_path / "DiffOSegPlans.json"
    save_plans(add_reference_configuration(base_plans()), path)
    loaded = load_plans(path)  # validates every configuration
    assert sorted(loaded.configurations) == ["2d", "2d_paper_reference"]
    assert loaded.configurations["2d_paper_reference"] == add_reference_configuration(base_plans()).configurations[
        "2d_paper_reference"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2])
def test_build_denoiser_and_forward(stage):
    plans = add_reference_configuration(base_plans())
    torch.manual_seed(0)
    net = denoiser_from_plans(plans, "2d_paper_reference", stage).eval()
    assert isinstance(net, ReferenceOpenAIUNet)
    assert net.num_raters == (4 if stage == 2 else None)
    # 5 levels (128 .. 8): attention in the encoder at 16 and 8 (2 blocks each), 16 and 8 in the decoder (3 each), middle
    assert sum(isinstance(m, AttentionBlock) for m in net.modules()) == 2 * 2 + 2 * 3 + 1
    n_params = sum(p.numel() for p in net.parameters())
    assert 4e6 < n_params < 1e7
    img = torch.randn(1, 1, 128, 128)
    x_t = torch.nn.functional.one_hot(torch.randint(0, 2, (1, 128, 128)), 2).movedim(-1, 1).float()
    rater = torch.tensor([3]) if stage == 2 else None
    with torch.no_grad():
        out = net(img, x_t, torch.tensor([250]), rater)
    assert out.shape == (1, 2, 128, 128) and torch.isfinite(out).all()


def test_cli_adds_and_saves(env_folders, capsys):
    folder = env_folders["preprocessed"] / DATASET
    folder.mkdir()
    save_plans(base_plans(), folder / "DiffOSegPlans.json")
    main(["-d", "20"])
    assert "2d_paper_reference" in capsys.readouterr().out
    loaded = load_plans(folder / "DiffOSegPlans.json")
    assert loaded.configurations["2d_paper_reference"].batch_size == 12
    raw = json.loads((folder / "DiffOSegPlans.json").read_text())
    assert raw["configurations"]["2d_paper_reference"]["data_identifier"] == "DiffOSegPlans_2d"
    # a bad base is one readable line and exit code 1
    assert run_command("diffoseg_add_reference_configuration", main, ["-d", "20", "-c", "3d_fullres"]) == 1
    assert "3d_fullres" in capsys.readouterr().err
