"""A tiny model folder and raw input for the prediction tests (random-weight checkpoints; the timing of
weights is irrelevant there): make_configuration, tiny_plans, write_model_folder, write_raw_input, predict;
tiny_cached_net (a K-class, R-rater cached-encoder denoiser with spread-out random weights) for the batching tests."""
from __future__ import annotations

import numpy as np
import torch

from diffoseg_auto.network.arguments import PromptArguments
from diffoseg_auto.network.unet_cached import CachedEncoderDenoiser
from diffoseg_auto.plans.network_arguments import unet_arguments
from diffoseg_auto.plans.plans import ArchitecturePlan, AugmentationPlan, ConfigurationPlan, DiffusionPlan, InferencePlan


def make_configuration(patch=(16, 16), mirror_axes=(0, 1), slice_axis=None, spatial_dims=None,
                       num_timesteps=20, denoiser="cached_encoder") -> ConfigurationPlan:
    d = spatial_dims or len(patch)
    arch = ArchitecturePlan(n_stages=2, features_per_stage=[4, 8], kernel_sizes=[[3] * d] * 2, strides=[[1] * d, [2] * d],
                            n_conv_per_stage=[1, 1], n_conv_per_stage_decoder=[1], time_embedding_dim=8, num_prompts=2,
                            prompt_dim=4, denoiser=denoiser)
    return ConfigurationPlan(
        data_identifier="test", spatial_dims=d, patch_size=list(patch), batch_size=2, spacing=[1.0] * d,
        median_image_size_in_voxels=list(patch), normalization_schemes=["zscore"], use_mask_for_norm=[False],
        resampling_order_data=3, resampling_order_seg=1, architecture=arch,
        diffusion=DiffusionPlan(num_timesteps=num_timesteps, sampling_steps=5, num_samples=2),
        augmentation=AugmentationPlan(mirror_axes=list(mirror_axes)),
        inference=InferencePlan(), slice_axis=slice_axis)


TINY_NET_CLASSES, TINY_NET_RATERS = 3, 2


def tiny_cached_net(cfg: ConfigurationPlan, seed: int = 0) -> CachedEncoderDenoiser:
    torch.manual_seed(seed)
    arch = cfg.architecture
    net = CachedEncoderDenoiser(unet_arguments(cfg), 1, TINY_NET_CLASSES, TINY_NET_RATERS, arch.time_embedding_dim,
                                arch.x_t_width_divisor, PromptArguments(num_prompts=arch.num_prompts,
                                                                        prompt_dim=arch.prompt_dim))
    for p in net.parameters():  # away from the zero inits, so that t, x_t and the rater all matter
        torch.nn.init.normal_(p, std=0.3)
    return net.eval()


DATASET = "Dataset901_Tiny"


def tiny_plans(dataset_name=DATASET):
    from diffoseg_auto.plans.plans import Plans

    cfg = make_configuration(patch=(16, 16), mirror_axes=(0, 1))
    cfg.spacing = [1.0, 1.0]
    cfg.data_identifier = "DiffOSegPlans_2d"
    return Plans(dataset_name=dataset_name, plans_name="DiffOSegPlans", num_classes=2, raters=["r1", "r2"],
                 num_input_channels=1, original_median_spacing=[0.5, 0.8], original_median_shape=[20, 28],
                 foreground_intensity_properties_per_channel={}, configurations={"2d": cfg})


def write_model_folder(results, plans, stages=(1, 2), trained_on=DATASET, folds=(0,), trainer="DiffOSegTrainer",
                       configuration="2d"):
    """A results folder as diffoseg_train writes it: random-weight checkpoints (timing of weights is irrelevant here).
    A baseline ``trainer`` (network.baselines) has its one network in stage1."""
    from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
    from diffoseg_auto.inference.model_loading import trained_network
    from diffoseg_auto.io.checkpoint_io import save_checkpoint

    folder = results / DATASET / f"{trainer}__DiffOSegPlans__{configuration}"
    write_dataset_json(folder, DatasetDescription(name="Tiny", channel_names={0: "MR"},
                                                  labels={"background": 0, "lesion": 1}, raters=plans.raters,
                                                  num_training=2, file_ending=".nii.gz"))
    for fold in folds:
        for stage in stages:
            torch.manual_seed(10 * stage + fold)
            net = trained_network(trainer, plans, configuration, stage)
            init_args = {"trainer_name": trainer, "plans_name": "DiffOSegPlans", "configuration": configuration,
                         "dataset_name": trained_on, "stage": stage, "fold": fold, "num_raters": plans.num_raters,
                         "num_classes": plans.num_classes}
            save_checkpoint(folder / f"fold_{fold}" / f"stage{stage}" / "checkpoint_final.pth",
                            {"network_weights": net.state_dict(), "init_args": init_args, "plans": plans.to_dict(),
                             "trainer_name": trainer})
    return folder


def write_raw_input(folder, n_cases=2, shape=(20, 28), ending=".nii.gz", spacing=(0.8, 0.5)):
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n_cases):
        arr = rng.normal(size=shape).astype(np.float32)
        arr[5:12, 8:20] += 3.0
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(spacing)  # SimpleITK (x, y) order: the default is array spacing (0.5, 0.8)
        img.SetOrigin((3.0, -2.0))
        sitk.WriteImage(img, str(folder / f"case{i}_0000{ending}"))


def predict(env_folders, tmp_path, **kw):
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder

    args = dict(num_samples=3, sampling_steps=3, device="cpu", num_processes_preprocessing=1, num_processes_export=1)
    args.update(kw)
    return predict_from_folder(tmp_path / "input", tmp_path / "out", DATASET, "2d", [0], **args)
