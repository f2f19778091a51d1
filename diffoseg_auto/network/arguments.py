"""The torch-level arguments of the networks: plain ints, lists and strings, grouped so that no constructor takes more
than a handful. The networks never read plans; diffoseg_auto/plans/network_arguments.py translates a plans
configuration into these (as nnU-Net's plans give dynamic-network-architectures its constructor arguments)."""
from __future__ import annotations

from dataclasses import dataclass, field

from diffoseg_auto.network.blocks import ConvOps, conv_ops


@dataclass(frozen=True)
class UNetArguments:
    """A plain conv U-Net's topology (dynamic-network-architectures' PlainConvUNet): one entry per stage."""
    spatial_dims: int
    features_per_stage: list[int]
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    n_conv_per_stage: list[int]
    n_conv_per_stage_decoder: list[int]  # n_stages - 1 entries
    norm: str = "instance"               # instance | batch | group
    nonlin: str = "leakyrelu"            # leakyrelu | relu | silu
    conv_bias: bool = True

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    def ops(self) -> ConvOps:
        return conv_ops(self.spatial_dims, self.norm, self.nonlin, self.conv_bias)


@dataclass(frozen=True)
class PromptArguments:
    """The Stage II prompt block (configuration.PROMPT_BLOCKS) and its prompt bank."""
    block: str = "residual"
    num_prompts: int = 8
    prompt_dim: int = 32


@dataclass(frozen=True)
class DenoiserArguments:
    """Everything network.factory.build_denoiser needs to build a denoiser of one stage."""
    layout: str                          # configuration.DENOISER_LAYOUTS
    unet: UNetArguments
    num_input_channels: int
    num_classes: int                     # K, background included
    num_raters: int | None = None        # None: Stage I (consensus); R: Stage II (rater prompts)
    time_embedding_dim: int = 128
    x_t_width_divisor: int = 4           # cached_encoder: x_t path widths = features // divisor
    prompt: PromptArguments = PromptArguments()
    reference: dict = field(default_factory=dict)    # reference_openai: its settings (REFERENCE_DEFAULTS' keys)
    patch_size: list[int] = field(default_factory=list)  # reference_openai: checked against its downsamplings
