"""Hand-edited plans: inheritance and validation errors that name the file and the field."""
import json

import pytest

from diffoseg_auto.plans.plans import PlansValidationError, load_plans


def base_plans() -> dict:
    return {
        "dataset_name": "Dataset001_X", "plans_name": "DiffOSegPlans", "num_classes": 2, "raters": ["a", "b"],
        "num_input_channels": 1, "original_median_spacing": [1.0, 1.0], "original_median_shape": [64, 64],
        "foreground_intensity_properties_per_channel": {},
        "configurations": {"2d": {
            "data_identifier": "DiffOSegPlans_2d", "spatial_dims": 2, "patch_size": [64, 64], "batch_size": 4,
            "spacing": [1.0, 1.0], "median_image_size_in_voxels": [64, 64], "normalization_schemes": ["zscore"],
            "use_mask_for_norm": [False], "resampling_order_data": 3, "resampling_order_seg": 1,
            "architecture": {"n_stages": 3, "features_per_stage": [8, 16, 32], "kernel_sizes": [[3, 3]] * 3,
                             "strides": [[1, 1], [2, 2], [2, 2]], "n_conv_per_stage": [2, 2, 2],
                             "n_conv_per_stage_decoder": [2, 2]},
        }},
    }


def write(tmp_path, d) -> str:
    p = tmp_path / "DiffOSegPlans.json"
    p.write_text(json.dumps(d))
    return p


def test_inheritance_merges_nested_sections(tmp_path):
    d = base_plans()
    d["configurations"]["2d_bs16"] = {"inherits_from": "2d", "batch_size": 16, "training": {"initial_lr": 3e-4},
                                      "diffusion": {"sampling_steps": 50}}
    plans = load_plans(write(tmp_path, d))
    child, parent = plans.get_configuration("2d_bs16"), plans.get_configuration("2d")
    assert child.batch_size == 16 and parent.batch_size == 4
    assert child.training.initial_lr == 3e-4 and child.training.ema_decay == parent.training.ema_decay
    assert child.diffusion.sampling_steps == 50 and child.diffusion.num_timesteps == 250
    assert child.architecture.features_per_stage == [8, 16, 32]


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(patch_size=[62, 64]), "divisible by the product of strides"),
    (lambda c: c["architecture"].update(features_per_stage=[8, 16]), "features_per_stage needs one entry per stage"),
    (lambda c: c.update(diffusion={"sampling_steps": 500}), "sampling_steps must be in 1..num_timesteps"),
    (lambda c: c.update(training={"consensus_target": "union"}), "consensus_target must be one of vote, soft, intersection, majority"),
    (lambda c: c.update(training={"x0_ce_weight": -0.1}), "x0_ce_weight must be >= 0"),
    (lambda c: c.update(batchsize=3), r"unknown field\(s\) \['batchsize'\]"),
    (lambda c: c.pop("spacing"), "required field 'spacing' is missing"),
    (lambda c: c.update(inherits_from="3d"), "inherits from unknown '3d'"),
    (lambda c: c["architecture"].update(denoiser="transformer"), "denoiser must be"),
])
def test_hand_edit_errors_name_file_and_field(tmp_path, edit, message):
    d = base_plans()
    edit(d["configurations"]["2d"])
    path = write(tmp_path, d)
    with pytest.raises(PlansValidationError, match=message) as e:
        load_plans(path)
    assert str(path) in str(e.value) and "configurations.2d" in str(e.value)


def test_invalid_json_and_missing_file(tmp_path):
    p = tmp_path / "DiffOSegPlans.json"
    p.write_text("{ not json")
    with pytest.raises(PlansValidationError, match="not valid JSON"):
        load_plans(p)
    with pytest.raises(FileNotFoundError, match="diffoseg_plan_and_preprocess"):
        load_plans(tmp_path / "missing.json")


def test_old_plans_with_previous_stage_still_load(tmp_path):
    """'previous_stage' was never read and is gone; files written before keep loading (and lose it)."""
    d = base_plans()
    expected = load_plans(write(tmp_path, d)).to_dict()
    d["configurations"]["2d"]["previous_stage"] = None
    loaded = load_plans(write(tmp_path, d)).to_dict()
    assert "previous_stage" not in loaded["configurations"]["2d"]
    assert loaded == expected
