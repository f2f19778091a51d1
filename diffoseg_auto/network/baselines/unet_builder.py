"""U-Net parts with the plans' topology, from dynamic-network-architectures (what nnU-Net builds)."""
from __future__ import annotations

from dynamic_network_architectures.architectures.unet import PlainConvUNet
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from torch import nn

from diffoseg_auto.network.blocks import ops_from_plan
from diffoseg_auto.plans.plans import Plans


def _topology(plans: Plans, configuration: str) -> dict:
    cfg = plans.get_configuration(configuration)
    arch = cfg.architecture
    ops = ops_from_plan(arch, cfg.spatial_dims)
    return dict(n_stages=arch.n_stages, features_per_stage=list(arch.features_per_stage), conv_op=ops.conv_op,
                kernel_sizes=[list(k) for k in arch.kernel_sizes], strides=[list(s) for s in arch.strides],
                n_conv_per_stage=list(arch.n_conv_per_stage), conv_bias=ops.conv_bias, norm_op=ops.norm_op,
                norm_op_kwargs=ops.norm_kwargs, nonlin=ops.nonlin, nonlin_kwargs=ops.nonlin_kwargs)


def plain_unet(plans: Plans, configuration: str, num_outputs: int) -> PlainConvUNet:
    """The plans' U-Net (no deep supervision) with ``num_outputs`` output channels."""
    topo = _topology(plans, configuration)
    arch = plans.get_configuration(configuration).architecture
    return PlainConvUNet(plans.num_input_channels, num_classes=num_outputs,
                         n_conv_per_stage_decoder=list(arch.n_conv_per_stage_decoder), deep_supervision=False, **topo)


def plain_unet_features(plans: Plans, configuration: str) -> tuple[PlainConvUNet, int]:
    """The plans' U-Net returning its last decoder feature map (the final 1x1 conv removed); and its channels."""
    net = plain_unet(plans, configuration, 1)
    net.decoder.seg_layers[-1] = nn.Identity()  # without deep supervision only the last seg layer is used
    return net, int(plans.get_configuration(configuration).architecture.features_per_stage[0])


def plain_encoder(plans: Plans, configuration: str, input_channels: int) -> tuple[PlainConvEncoder, int]:
    """The plans' U-Net encoder on ``input_channels`` inputs; returns it and its bottleneck channels."""
    topo = _topology(plans, configuration)
    return PlainConvEncoder(input_channels, return_skips=False, **topo), int(topo["features_per_stage"][-1])
