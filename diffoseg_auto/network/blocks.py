"""Building blocks shared by the denoiser layouts: op selection by name (``conv_ops``), timestep
embedding, FiLM-conditioned conv stages (dynamic_network_architectures blocks) and init helpers."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from dynamic_network_architectures.building_blocks.helper import (
    convert_dim_to_conv_op,
    get_matching_batchnorm,
    get_matching_convtransp,
    get_matching_instancenorm,
)
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import Tensor, nn


def num_groups_for(channels: int, max_groups: int = 32) -> int:
    """Largest group count <= max_groups that divides ``channels`` (GroupNorm needs a divisor)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


class ChannelGroupNorm(nn.GroupNorm):
    """GroupNorm with the (num_channels, **kwargs) signature that norm_op slots expect."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__(num_groups_for(num_channels), num_channels, eps=eps, affine=affine)


def is_channels_last(x: Tensor) -> bool:
    """A 4D tensor laid out channels-last (and not also plain contiguous, as a 1-channel or 1x1 tensor is)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class ChannelsLastInstanceNorm2d(nn.InstanceNorm2d):
    """InstanceNorm2d with a channels-last CPU inference path.

    PyTorch's instance norm views its input as one (1, B*C, H, W) batch norm, which needs NCHW: a channels-last
    input is copied to NCHW and back. Here the per-(sample, channel) statistics are two float32 sums over (H, W)
    (the mean, then the squared deviations; also for bfloat16 input) and the normalisation and affine are one
    ``addcmul`` with (B, C, 1, 1) operands, which keeps channels-last. ``forward_film`` folds the FiLM that follows
    the first norm of a stage into the same ``addcmul``. This replaced a per-sample batch-norm loop and its
    concatenation (222 calls per sampling step; results.md, issue 22). CUDA, training (grad enabled) and other
    layouts keep the stock path."""

    def _fast_path(self, x: Tensor) -> bool:
        return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and not torch.is_grad_enabled()
                and not self.track_running_stats and is_channels_last(x))

    def _scale_shift(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """float32 (B, C, 1, 1) scale and shift with norm(x) = x * scale + shift."""
        # two passes in float32 (exact, no E[x^2] - E[x]^2 cancellation): torch.var_mean over the strided (H, W) of a
        # channels-last tensor is a scalar Welford loop, 5-10x slower than these two vectorised sums (results.md)
        xf = x.float()
        mean = xf.mean(dim=(2, 3), keepdim=True)
        var = (xf - mean).square_().mean(dim=(2, 3), keepdim=True)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight.view(1, -1, 1, 1).float()
            return scale, self.bias.view(1, -1, 1, 1).float() - mean * scale
        return scale, -mean * scale

    def forward(self, x: Tensor) -> Tensor:
        if not self._fast_path(x):
            return super().forward(x)
        scale, shift = self._scale_shift(x)
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))

    def forward_film(self, x: Tensor, params: Tensor) -> Tensor:
        """``film(self(x), params)``; on the fast path in one pass over x."""
        if not self._fast_path(x):
            return film(self(x), params)
        scale, shift = self._scale_shift(x)
        gain, offset = params.float().view(*params.shape, 1, 1).chunk(2, dim=1)
        gain = 1 + gain
        return torch.addcmul((shift * gain + offset).to(x.dtype), x, (scale * gain).to(x.dtype))


def norm_then_film(norm: nn.Module, x: Tensor, params: Tensor) -> Tensor:
    """``film(norm(x), params)``, fused where the norm can fuse it."""
    if isinstance(norm, ChannelsLastInstanceNorm2d):
        return norm.forward_film(x, params)
    return film(norm(x), params)


@dataclass
class ConvOps:
    dims: int
    conv_op: type
    transp_op: type
    norm_op: type
    norm_kwargs: dict
    nonlin: type
    nonlin_kwargs: dict
    conv_bias: bool


def conv_ops(dims: int, norm: str = "instance", nonlin: str = "leakyrelu", conv_bias: bool = True) -> ConvOps:
    """The torch classes of ``dims`` = 2 or 3 for a norm (instance | batch | group) and a nonlinearity
    (leakyrelu | relu | silu) named as in the plans' architecture."""
    conv_op = convert_dim_to_conv_op(dims)
    norms = {
        "instance": (ChannelsLastInstanceNorm2d if dims == 2 else get_matching_instancenorm(conv_op),
                     {"eps": 1e-5, "affine": True}),
        "batch": (get_matching_batchnorm(conv_op), {"eps": 1e-5, "affine": True}),
        "group": (ChannelGroupNorm, {"eps": 1e-5, "affine": True}),
    }
    nonlins = {
        "leakyrelu": (nn.LeakyReLU, {"negative_slope": 1e-2, "inplace": True}),
        "relu": (nn.ReLU, {"inplace": True}),
        "silu": (nn.SiLU, {"inplace": True}),
    }
    if norm not in norms:
        raise ValueError(f"architecture.norm must be one of {sorted(norms)}, got '{norm}'. Fix it in the plans.")
    if nonlin not in nonlins:
        raise ValueError(f"architecture.nonlin must be one of {sorted(nonlins)}, got '{nonlin}'. Fix it in the plans.")
    norm_op, norm_kwargs = norms[norm]
    nonlin_op, nonlin_kwargs = nonlins[nonlin]
    return ConvOps(dims, conv_op, get_matching_convtransp(conv_op), norm_op, norm_kwargs, nonlin_op, nonlin_kwargs,
                   bool(conv_bias))


def zero_module(module: nn.Module) -> nn.Module:
    """Zero all parameters: a residual branch through this module starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def he_init(module: nn.Module) -> None:
    """nnU-Net's He init for every conv; call before zeroing the zero-init projections."""
    module.apply(InitWeights_He(1e-2))


def init_film_network(module: nn.Module) -> None:
    """He init, then zero every FiLM projection so the time conditioning starts as identity."""
    he_init(module)
    for m in module.modules():
        if hasattr(m, "zero_init_film"):
            m.zero_init_film()


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sin/cos features of the integer timestep, (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal features -> MLP. Returns SiLU(embedding) so FiLM heads can use it directly."""

    def __init__(self, dim: int, out_dim: int | None = None):
        super().__init__()
        self.dim = dim
        out_dim = out_dim or dim
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.out_dim = out_dim

    def forward(self, t: Tensor) -> Tensor:
        return nn.functional.silu(self.mlp(sinusoidal_embedding(t, self.dim)))


def film(x: Tensor, params: Tensor) -> Tensor:
    """x * (1 + scale) + shift with (B, 2C) params broadcast over the spatial axes.

    One addcmul instead of a multiply and an add: on a channels-last CPU tensor the broadcast (B, C, 1, 1)
    operands take a slow path, so the fused op is 2-3x faster (BU-BIL sampling, results.md)."""
    scale, shift = params.view(*params.shape, *([1] * (x.ndim - 2))).chunk(2, dim=1)
    return torch.addcmul(shift, x, 1 + scale)


class FiLMConvStage(nn.Module):
    """StackedConvBlocks whose first normalised output is FiLM-modulated by the time embedding.

    ``extra`` (optional) is added to the first conv's output before normalisation: this is how
    the rater one-hot enters as "extra input channels" while its weights live in a separate,
    zero-initialised conv that can stay trainable when the backbone is frozen.
    """

    def __init__(self, num_convs: int, ops: ConvOps, in_ch: int, out_ch: int, kernel: list[int],
                 stride: list[int] | int, emb_dim: int):
        super().__init__()
        self.blocks = StackedConvBlocks(num_convs, ops.conv_op, in_ch, out_ch, kernel, stride, ops.conv_bias,
                                        ops.norm_op, ops.norm_kwargs, None, None, ops.nonlin, ops.nonlin_kwargs)
        self.film = nn.Linear(emb_dim, 2 * out_ch)
        self.out_channels = out_ch

    def zero_init_film(self) -> None:
        zero_module(self.film)

    def forward(self, x: Tensor, emb: Tensor, extra: Tensor | None = None) -> Tensor:
        for i, blk in enumerate(self.blocks.convs):
            x = blk.conv(x)
            if i == 0 and extra is not None:
                x = x + extra
            x = norm_then_film(blk.norm, x, self.film(emb)) if i == 0 else blk.norm(x)
            x = blk.nonlin(x)
        return x


def make_rater_input(ops: ConvOps, num_raters: int, out_ch: int, kernel: list[int], stride: list[int]) -> nn.Module:
    """Conv over the (spatially constant) rater one-hot, same kernel/stride as the first conv it joins.

    conv(cat[a, r]) == conv_a(a) + conv_r(r), so this is exactly extra input channels.
    Zero-initialised: Stage II starts as Stage I.
    """
    conv = ops.conv_op(num_raters, out_ch, kernel, stride, padding=[(k - 1) // 2 for k in kernel], bias=False)
    return zero_module(conv)


def rater_input_map(conv: nn.Module, onehot: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """``conv(rater_planes(onehot, spatial))`` without convolving B x R constant planes.

    The planes are constant, so the output for rater r is the conv of a ones plane with the weights
    of input channel r: one conv of a single ones plane with R x C output channels gives every
    rater's map (zero padding makes only the borders differ), then each row mixes its raters'
    maps. About 10% of a Stage II denoising step at full resolution otherwise."""
    num_raters, out_ch = onehot.shape[1], conv.weight.shape[0]
    kernel = conv.weight.shape[2:]
    weight = conv.weight.transpose(0, 1).reshape(num_raters * out_ch, 1, *kernel)
    ones = torch.ones((1, 1, *spatial), device=onehot.device, dtype=weight.dtype)
    per_rater = conv._conv_forward(ones, weight, None)
    per_rater = per_rater.view(num_raters, out_ch, *per_rater.shape[2:])
    return torch.einsum("br,rc...->bc...", onehot.to(per_rater.dtype), per_rater)


def pointwise_conv(conv: nn.Module, x: Tensor) -> Tensor:
    """A 1x1 conv as a matrix product: oneDNN runs a 1x1 conv with few output channels (the K-class
    head) an order of magnitude slower than the same product."""
    w = conv.weight.reshape(conv.weight.shape[0], conv.weight.shape[1])
    out = torch.einsum("oc,bc...->bo...", w, x)
    return out if conv.bias is None else out + conv.bias.view(1, -1, *([1] * (x.ndim - 2))).to(out.dtype)


def rater_planes(onehot: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """(B, R) one-hot -> (B, R, *spatial) constant planes."""
    return onehot.view(*onehot.shape, *([1] * len(spatial))).expand(*onehot.shape, *spatial)
