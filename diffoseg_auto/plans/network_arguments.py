"""The one translation of a plans configuration into the torch-level arguments of the networks and the diffusion
(nnU-Net's get_network_from_plans): network/ and diffusion/ take plain ints, lists and strings and never read plans.

Every module that builds a network or a diffusion from plans (the trainers, diffoseg_add_rater, model loading,
benchmarks) calls ``denoiser_from_plans`` / ``baseline_from_plans`` / ``diffusion_from_plans``.
"""
from __future__ import annotations

from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
from diffoseg_auto.network.arguments import DenoiserArguments, PromptArguments, UNetArguments
from diffoseg_auto.network.baselines.base import BaselineNetwork
from diffoseg_auto.network.denoiser_base import DenoiserBase
from diffoseg_auto.network.factory import build_denoiser
from diffoseg_auto.plans.plans import ConfigurationPlan, Plans


def unet_arguments(configuration: ConfigurationPlan) -> UNetArguments:
    """The configuration's U-Net topology and ops (architecture: stages, norm, nonlin, bias)."""
    arch = configuration.architecture
    return UNetArguments(spatial_dims=configuration.spatial_dims,
                         features_per_stage=[int(f) for f in arch.features_per_stage],
                         kernel_sizes=[[int(k) for k in ks] for ks in arch.kernel_sizes],
                         strides=[[int(s) for s in st] for st in arch.strides],
                         n_conv_per_stage=[int(n) for n in arch.n_conv_per_stage],
                         n_conv_per_stage_decoder=[int(n) for n in arch.n_conv_per_stage_decoder],
                         norm=arch.norm, nonlin=arch.nonlin, conv_bias=bool(arch.conv_bias))


def denoiser_arguments(plans: Plans, configuration: str, stage: int) -> DenoiserArguments:
    """Stage 1: the consensus denoiser (no rater input); stage 2: with the plans' raters and the prompt block."""
    if stage not in (1, 2):
        raise ValueError(f"build_denoiser: stage must be 1 (consensus) or 2 (per-rater prompts), got {stage}")
    cfg = plans.get_configuration(configuration)
    arch = cfg.architecture
    if arch.deep_supervision:
        raise ValueError(f"plans '{plans.plans_name}', configuration '{configuration}', architecture.deep_supervision="
                         "true is not supported by the diffusion denoisers (x0 is predicted at full resolution only). "
                         "Set it to false in the plans.")
    if stage == 2 and plans.num_raters < 1:
        raise ValueError(f"build_denoiser: Stage II needs raters, plans '{plans.plans_name}' lists none")
    return DenoiserArguments(layout=arch.denoiser, unet=unet_arguments(cfg), num_input_channels=plans.num_input_channels,
                             num_classes=plans.num_classes, num_raters=plans.num_raters if stage == 2 else None,
                             time_embedding_dim=int(arch.time_embedding_dim), x_t_width_divisor=int(arch.x_t_width_divisor),
                             prompt=PromptArguments(cfg.stage2.prompt_block, int(arch.num_prompts), int(arch.prompt_dim)),
                             reference=dict(arch.reference), patch_size=[int(p) for p in cfg.patch_size])


def denoiser_from_plans(plans: Plans, configuration: str, stage: int) -> DenoiserBase:
    """The (untrained) denoiser the plans ask for."""
    return build_denoiser(denoiser_arguments(plans, configuration, stage))


def baseline_from_plans(network_class: type[BaselineNetwork], plans: Plans, configuration: str) -> BaselineNetwork:
    """A baseline network (network/baselines) with the configuration's U-Net topology."""
    return network_class(unet_arguments(plans.get_configuration(configuration)), plans.num_input_channels,
                         plans.num_classes, plans.num_raters)


def diffusion_from_plans(plans: Plans, configuration: str) -> CategoricalDiffusion:
    """The configuration's categorical diffusion (timesteps, schedule and shift, the x0 readout)."""
    d = plans.get_configuration(configuration).diffusion
    return CategoricalDiffusion(plans.num_classes, d.num_timesteps, d.schedule, d.schedule_shift, d.x0_given_xt)
