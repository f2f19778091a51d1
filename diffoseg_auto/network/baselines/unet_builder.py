"""U-Net parts of a given topology, from dynamic-network-architectures (what nnU-Net builds)."""
from __future__ import annotations

from dynamic_network_architectures.architectures.unet import PlainConvUNet
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from torch import nn

from diffoseg_auto.network.arguments import UNetArguments


def _topology(unet: UNetArguments) -> dict:
    ops = unet.ops()
    return dict(n_stages=unet.n_stages, features_per_stage=list(unet.features_per_stage), conv_op=ops.conv_op,
                kernel_sizes=[list(k) for k in unet.kernel_sizes], strides=[list(s) for s in unet.strides],
                n_conv_per_stage=list(unet.n_conv_per_stage), conv_bias=ops.conv_bias, norm_op=ops.norm_op,
                norm_op_kwargs=ops.norm_kwargs, nonlin=ops.nonlin, nonlin_kwargs=ops.nonlin_kwargs)


def plain_unet(unet: UNetArguments, input_channels: int, num_outputs: int) -> PlainConvUNet:
    """The U-Net (no deep supervision) on ``input_channels`` inputs with ``num_outputs`` output channels."""
    return PlainConvUNet(input_channels, num_classes=num_outputs,
                         n_conv_per_stage_decoder=list(unet.n_conv_per_stage_decoder), deep_supervision=False,
                         **_topology(unet))


def plain_unet_features(unet: UNetArguments, input_channels: int) -> tuple[PlainConvUNet, int]:
    """The U-Net returning its last decoder feature map (the final 1x1 conv removed); and its channels."""
    net = plain_unet(unet, input_channels, 1)
    net.decoder.seg_layers[-1] = nn.Identity()  # without deep supervision only the last seg layer is used
    return net, int(unet.features_per_stage[0])


def plain_encoder(unet: UNetArguments, input_channels: int) -> tuple[PlainConvEncoder, int]:
    """The U-Net's encoder on ``input_channels`` inputs; returns it and its bottleneck channels."""
    topo = _topology(unet)
    return PlainConvEncoder(input_channels, return_skips=False, **topo), int(topo["features_per_stage"][-1])
