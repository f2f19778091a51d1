"""Build the denoiser the plans ask for; Stage I -> Stage II weight transfer; backbone freezing."""
from __future__ import annotations

import torch
from torch import nn

from diffoseg_auto.network.blocks import ops_from_plan
from diffoseg_auto.network.denoiser_base import DenoiserBase
from diffoseg_auto.network.reference_openai import ReferenceOpenAIUNet
from diffoseg_auto.network.unet_cached import CachedEncoderDenoiser
from diffoseg_auto.network.unet_concat import ConcatUNetDenoiser
from diffoseg_auto.plans.plans import Plans

LAYOUTS = ("cached_encoder", "concat", "reference_openai")


def build_denoiser(plans: Plans, configuration: str, stage: int) -> DenoiserBase:
    """Stage 1: consensus network (no rater input); stage 2: adds rater one-hot input and the prompt block."""
    if stage not in (1, 2):
        raise ValueError(f"build_denoiser: stage must be 1 (consensus) or 2 (per-rater prompts), got {stage}")
    cfg = plans.get_configuration(configuration)
    arch = cfg.architecture
    where = f"plans '{plans.plans_name}', configuration '{configuration}', architecture"
    if arch.denoiser not in LAYOUTS:
        raise ValueError(f"{where}.denoiser must be one of {LAYOUTS}, got '{arch.denoiser}'")
    if arch.deep_supervision:
        raise ValueError(f"{where}.deep_supervision=true is not supported by the diffusion denoisers (x0 is predicted "
                         "at full resolution only). Set it to false in the plans.")
    if stage == 2 and plans.num_raters < 1:
        raise ValueError(f"build_denoiser: Stage II needs raters, plans '{plans.plans_name}' lists none")
    num_raters = plans.num_raters if stage == 2 else None
    ops = ops_from_plan(arch, cfg.spatial_dims)
    c, k = plans.num_input_channels, plans.num_classes
    if arch.denoiser == "reference_openai":
        return ReferenceOpenAIUNet(arch.reference, ops, list(cfg.patch_size), c, k, num_raters, arch.num_prompts,
                                   arch.prompt_dim, cfg.stage2.prompt_block)
    cls = CachedEncoderDenoiser if arch.denoiser == "cached_encoder" else ConcatUNetDenoiser
    return cls(arch, ops, c, k, num_raters, cfg.stage2.prompt_block)


def transfer_stage1_weights(stage2_net: nn.Module, stage1_state_dict: dict) -> list[str]:
    """Load Stage I weights into a Stage II network; return the Stage II state-dict names not transferred.

    Tensors matching by name and shape are copied. A tensor whose only difference is more input
    channels (dim 1, e.g. a first conv that gained rater one-hot channels) gets the old channels
    copied and the new ones zeroed, so it computes what Stage I computed. Parameters new in
    Stage II (prompt block, rater input) keep their init; their zero-initialised output
    projections make the fresh Stage II network equal to Stage I.
    """
    stage1_state_dict = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in stage1_state_dict.items()}
    target = stage2_net.state_dict()
    unused = sorted(set(stage1_state_dict) - set(target))
    if unused:
        raise ValueError(f"transfer_stage1_weights: Stage I weights {unused[:5]}{'...' if len(unused) > 5 else ''} "
                         "have no counterpart in the Stage II network; both must be built from the same plans "
                         "and configuration.")
    new_state, not_transferred = {}, []
    for name, dst in target.items():
        src = stage1_state_dict.get(name)
        if src is None:
            not_transferred.append(name)
            continue
        if src.shape == dst.shape:
            new_state[name] = src.to(dtype=dst.dtype)
        elif (src.ndim == dst.ndim >= 2 and src.shape[0] == dst.shape[0] and src.shape[2:] == dst.shape[2:]
              and src.shape[1] < dst.shape[1]):
            grown = torch.zeros_like(dst)
            grown[:, :src.shape[1]] = src
            new_state[name] = grown
        else:
            raise ValueError(f"transfer_stage1_weights: '{name}' has shape {tuple(src.shape)} in Stage I but "
                             f"{tuple(dst.shape)} in Stage II; build both networks from the same plans.")
    stage2_net.load_state_dict(new_state, strict=False)
    return not_transferred


def freeze_backbone(stage2_net: nn.Module) -> None:
    """requires_grad=False for everything except the Stage II prompt block and rater input."""
    if getattr(stage2_net, "num_raters", None) is None:
        raise ValueError("freeze_backbone: expects a Stage II network (built with stage=2)")
    prefixes = getattr(stage2_net, "stage2_param_prefixes", DenoiserBase.stage2_param_prefixes)
    for name, p in stage2_net.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
