"""Build a denoiser from its torch-level arguments; Stage I -> Stage II weight transfer; backbone freezing.

The plans never reach this module: diffoseg_auto/plans/network_arguments.py translates a configuration into the
``DenoiserArguments`` that ``build_denoiser`` takes (nnU-Net's get_network_from_plans split in two)."""
from __future__ import annotations

import torch
from torch import nn

from diffoseg_auto.configuration import DENOISER_LAYOUTS
from diffoseg_auto.network.arguments import DenoiserArguments
from diffoseg_auto.network.denoiser_base import DenoiserBase
from diffoseg_auto.network.reference_openai import ReferenceOpenAIUNet
from diffoseg_auto.network.unet_cached import CachedEncoderDenoiser
from diffoseg_auto.network.unet_concat import ConcatUNetDenoiser


def build_denoiser(arguments: DenoiserArguments) -> DenoiserBase:
    """The denoiser of ``arguments.layout``: Stage I without raters (``num_raters`` None), Stage II with the rater
    input and the prompt block."""
    a = arguments
    if a.layout not in DENOISER_LAYOUTS:
        raise ValueError(f"denoiser layout must be one of {DENOISER_LAYOUTS}, got '{a.layout}'")
    if a.layout == "reference_openai":
        return ReferenceOpenAIUNet(a.reference, a.unet.ops(), list(a.patch_size), a.num_input_channels, a.num_classes,
                                   a.num_raters, a.prompt)
    if a.layout == "concat":
        return ConcatUNetDenoiser(a.unet, a.num_input_channels, a.num_classes, a.num_raters, a.time_embedding_dim,
                                  a.prompt)
    return CachedEncoderDenoiser(a.unet, a.num_input_channels, a.num_classes, a.num_raters, a.time_embedding_dim,
                                 a.x_t_width_divisor, a.prompt)


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
