"""Denoiser networks: shapes, caching, time conditioning, Stage I -> II transfer, freezing, topology."""
from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

from diffoseg_auto.network import DenoiserBase, expand_cache, freeze_backbone, transfer_stage1_weights
from diffoseg_auto.network.prompt_block import PromptBlock
from diffoseg_auto.network.blocks import conv_ops
from diffoseg_auto.plans.network_arguments import denoiser_from_plans
from diffoseg_auto.plans.plans import ArchitecturePlan, ConfigurationPlan, Plans

torch.set_num_threads(2)
C, K = 2, 3


def make_plans(dims: int = 2, denoiser: str = "cached_encoder", raters: int = 3, **arch_kw) -> Plans:
    n = 3
    patch = [16] * dims if dims == 2 else [8] * dims
    strides = [[1] * dims] + [[2] * dims] * (n - 1)
    kernels = [[3] * dims, [3] * dims, [1] + [3] * (dims - 1)]  # anisotropic last kernel to check topology
    arch = ArchitecturePlan(
        n_stages=n, features_per_stage=[8, 16, 16], kernel_sizes=kernels, strides=strides,
        n_conv_per_stage=[2, 2, 1], n_conv_per_stage_decoder=[1, 1], time_embedding_dim=16,
        num_prompts=3, prompt_dim=4, denoiser=denoiser, x_t_width_divisor=2,
        reference={"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                   "attention_resolutions": [8], "num_heads": 2},
        **arch_kw,
    )
    cfg = ConfigurationPlan(data_identifier="d", spatial_dims=dims, patch_size=patch, batch_size=2,
                            spacing=[1.0] * dims, median_image_size_in_voxels=patch,
                            normalization_schemes=["zscore"] * C, use_mask_for_norm=[False] * C,
                            resampling_order_data=3, resampling_order_seg=1, architecture=arch)
    return Plans(dataset_name="Dataset001_T", plans_name="P", num_classes=K, raters=[f"r{i}" for i in range(raters)],
                 num_input_channels=C, original_median_spacing=[1.0] * dims, original_median_shape=patch,
                 foreground_intensity_properties_per_channel={}, configurations={"c": cfg})


def inputs(plans: Plans, b: int = 2, seed: int = 0):
    cfg = plans.configurations["c"]
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, C, *cfg.patch_size, generator=g)
    labels = torch.randint(0, K, (b, *cfg.patch_size), generator=g)
    x_t = nn.functional.one_hot(labels, K).movedim(-1, 1).float()
    t = torch.randint(1, 100, (b,), generator=g)
    return img, x_t, t


def perturb(module: nn.Module, seed: int = 1, std: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def build(plans, stage, seed=0):
    torch.manual_seed(seed)
    return denoiser_from_plans(plans, "c", stage).eval()


LAYOUTS = [(2, "cached_encoder"), (3, "cached_encoder"), (2, "concat"), (3, "concat"), (2, "reference_openai")]


@pytest.mark.parametrize("dims,layout", LAYOUTS)
@pytest.mark.parametrize("stage", [1, 2])
def test_output_shape(dims, layout, stage):
    plans = make_plans(dims, layout)
    net = build(plans, stage)
    assert isinstance(net, DenoiserBase) and net.num_classes == K
    assert net.num_raters == (None if stage == 1 else 3)
    img, x_t, t = inputs(plans)
    rid = torch.tensor([0, 2]) if stage == 2 else None
    out = net(img, x_t, t, rid)
    assert out.shape == (2, K, *plans.configurations["c"].patch_size)
    assert torch.isfinite(out).all()
    # values: each batch row depends only on its own inputs (eval mode), and the logits are not constant
    alone = net(img[1:], x_t[1:], t[1:], None if rid is None else rid[1:])
    torch.testing.assert_close(out[1:], alone, rtol=1e-4, atol=1e-5)
    assert out.std() > 1e-4 and (out[0] - out[1]).abs().max() > 1e-4


@pytest.mark.parametrize("layout", ["cached_encoder", "concat", "reference_openai"])
def test_encode_once_serves_many_steps(layout):
    plans = make_plans(2, layout)
    net = build(plans, 1)
    perturb(net)
    img, x_t, t = inputs(plans)
    cache = net.encode(img)
    with torch.no_grad():
        for seed in range(3):
            _, x2, t2 = inputs(plans, seed=seed + 10)
            torch.testing.assert_close(net.denoise(cache, x2, t2), net(img, x2, t2), rtol=0, atol=1e-6)


@pytest.mark.parametrize("layout", ["cached_encoder", "concat"])
def test_expand_cache_matches_repeated_batch(layout):
    plans = make_plans(2, layout)
    net = build(plans, 1)
    perturb(net)
    img, _, _ = inputs(plans)
    n = 3
    _, x_t, t = inputs(plans, b=2 * n, seed=5)
    with torch.no_grad():
        a = net.denoise(expand_cache(net.encode(img), n), x_t, t)
        b = net(img.repeat_interleave(n, 0), x_t, t)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_expand_cache_nested():
    x = torch.arange(4.0).view(2, 2)
    out = expand_cache({"a": [x, (x, 7)], "b": "s"}, 2)
    assert out["b"] == "s" and out["a"][1][1] == 7 and isinstance(out["a"][1], tuple)
    assert out["a"][0].tolist() == [[0, 1], [0, 1], [2, 3], [2, 3]]
    pair = collections.namedtuple("pair", "feat meta")
    nt = expand_cache(pair(torch.tensor([5, 6]), None), 3)
    assert isinstance(nt, pair) and nt.feat.tolist() == [5, 5, 5, 6, 6, 6] and nt.meta is None


def test_expand_cache_keeps_channels_last_and_repeats_each_row():
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    out = expand_cache(x, 3)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    torch.testing.assert_close(out, x.repeat_interleave(3, dim=0), rtol=0, atol=0)
    v = torch.randn(2, 3, 4, 5, 6)  # 3D features stay in the default format
    assert expand_cache(v, 2).is_contiguous() and torch.equal(expand_cache(v, 2), v.repeat_interleave(2, dim=0))


def test_film_scales_and_shifts_each_channel():
    from diffoseg_auto.network.blocks import film

    x = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    params = torch.randn(2, 6)
    scale, shift = params[:, :3, None, None], params[:, 3:, None, None]
    torch.testing.assert_close(film(x, params), x * (1 + scale) + shift)


@pytest.mark.parametrize("layout", ["cached_encoder", "concat"])
def test_time_conditioning(layout):
    plans = make_plans(2, layout)
    net = build(plans, 1)
    img, x_t, _ = inputs(plans)
    t1, t2 = torch.tensor([1, 1]), torch.tensor([90, 90])
    with torch.no_grad():
        # FiLM projections are zero-initialised: at init the output does not depend on t
        torch.testing.assert_close(net(img, x_t, t1), net(img, x_t, t2), rtol=0, atol=0)
        for name, p in net.named_parameters():
            if ".film." in name:
                p.normal_(0, 0.1)
        assert (net(img, x_t, t1) - net(img, x_t, t2)).abs().max() > 1e-3


def test_reference_time_conditioning():
    plans = make_plans(2, "reference_openai")
    net = build(plans, 1)
    perturb(net)
    img, x_t, _ = inputs(plans)
    with torch.no_grad():
        assert (net(img, x_t, torch.tensor([1, 1])) - net(img, x_t, torch.tensor([90, 90]))).abs().max() > 1e-3


@pytest.mark.parametrize("dims,layout", LAYOUTS)
def test_rater_embedding_steers_every_stage(dims, layout):
    """The rater enters the timestep embedding too: with the prompt block and the (norm-cancelled)
    constant input planes left at zero, the rater embedding alone changes the output."""
    plans = make_plans(dims, layout, raters=3)
    s1 = build(plans, 1)
    perturb(s1)
    s2 = build(plans, 2)
    transfer_stage1_weights(s2, s1.state_dict())
    img, x_t, t = inputs(plans)
    with torch.no_grad():
        s2.rater_embedding.weight.normal_(0, 1.0)
        outs = [s2(img, x_t, t, torch.tensor([k, k])) for k in range(3)]
    assert (outs[0] - outs[1]).abs().max() > 1e-3 and (outs[1] - outs[2]).abs().max() > 1e-3


@pytest.mark.parametrize("dims,layout", LAYOUTS)
@pytest.mark.parametrize("raters", [3, pytest.param(6, marks=pytest.mark.slow)])  # 6: the same check, more prompts
def test_stage2_starts_as_stage1(dims, layout, raters):
    plans = make_plans(dims, layout, raters=raters)
    s1 = build(plans, 1)
    perturb(s1)  # non-trivial Stage I weights, zero-init FiLM/residual layers included
    s2 = build(plans, 2, seed=3)
    missing = transfer_stage1_weights(s2, s1.state_dict())
    assert missing and all(n.startswith(DenoiserBase.stage2_param_prefixes) for n in missing)
    assert "rater_embedding.weight" in missing
    assert s2.prompt_block.rater_weight.shape[0] == raters
    img, x_t, t = inputs(plans)
    with torch.no_grad():
        ref = s1(img, x_t, t)
        for k in range(raters):
            torch.testing.assert_close(s2(img, x_t, t, torch.tensor([k, k])), ref, rtol=0, atol=1e-5)
        perturb(s2.prompt_block, seed=7, std=0.5)
        outs = [s2(img, x_t, t, torch.tensor([k, k])) for k in range(raters)]
    for a in range(raters):
        for b in range(a + 1, raters):
            assert (outs[a] - outs[b]).abs().max() > 1e-4


def test_transfer_grows_input_channels_with_zeros():
    old, new = nn.Conv2d(3, 4, 3), nn.Conv2d(5, 4, 3)
    missing = transfer_stage1_weights(new, old.state_dict())
    assert missing == []
    torch.testing.assert_close(new.weight[:, :3], old.weight)
    assert new.weight[:, 3:].abs().max() == 0
    x = torch.randn(1, 5, 6, 6)
    torch.testing.assert_close(new(x), old(x[:, :3]))


def test_transfer_rejects_other_plans():
    s2 = build(make_plans(2, "concat"), 2)
    s1_other = build(make_plans(2, "cached_encoder"), 1)
    with pytest.raises(ValueError, match="same plans"):
        transfer_stage1_weights(s2, s1_other.state_dict())


@pytest.mark.parametrize("layout", ["cached_encoder", "concat", "reference_openai"])
def test_freeze_backbone(layout):
    net = build(make_plans(2, layout), 2)
    freeze_backbone(net)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    expected = {n for n, _ in net.named_parameters() if n.startswith(DenoiserBase.stage2_param_prefixes)}
    assert trainable == expected and "rater_input.weight" in trainable and "prompt_block.prompts" in trainable
    with pytest.raises(ValueError, match="Stage II"):
        freeze_backbone(build(make_plans(2, layout), 1))


@pytest.mark.parametrize("dims,layout", [(2, "concat"), (3, "concat"), (3, "cached_encoder")])
def test_topology_matches_plans(dims, layout):
    plans = make_plans(dims, layout)
    arch = plans.configurations["c"].architecture
    net = build(plans, 1)
    encoders = [net.encoder] if layout == "concat" else [net.xt_encoder]
    for enc in encoders:
        for s, stage in enumerate(enc.stages):
            convs = [m.conv for m in stage.blocks.convs]
            assert len(convs) == arch.n_conv_per_stage[s]
            assert list(convs[0].stride) == arch.strides[s]
            assert all(list(c.kernel_size) == arch.kernel_sizes[s] for c in convs)
            assert all(list(c.stride) == [1] * dims for c in convs[1:])
    if layout == "cached_encoder":
        for s, stage in enumerate(net.image_encoder.stages):
            convs = [m for m in stage.modules() if isinstance(m, nn.Conv3d)]
            assert list(convs[0].stride) == arch.strides[s] and list(convs[0].kernel_size) == arch.kernel_sizes[s]
        assert [st.out_channels for st in net.xt_encoder.stages] == [4, 8, 8]  # features // x_t_width_divisor
    ups = net.decoder.upsample  # deepest first
    assert [list(u.stride) for u in ups] == arch.strides[:0:-1]
    assert [len(st.blocks.convs) for st in net.decoder.stages] == arch.n_conv_per_stage_decoder[::-1]


def test_input_errors():
    plans = make_plans(2, "cached_encoder")
    s1, s2 = build(plans, 1), build(plans, 2)
    img, x_t, t = inputs(plans)
    with pytest.raises(ValueError, match="rater_id"):
        s2(img, x_t, t)
    with pytest.raises(ValueError, match="0..2"):
        s2(img, x_t, t, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="Stage I"):
        s1(img, x_t, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="x_t must be one-hot"):
        s1(img, x_t[:, :2], t)
    with pytest.raises(ValueError, match="expand_cache"):
        s1.denoise(s1.encode(img), torch.cat([x_t, x_t]), torch.cat([t, t]))
    with pytest.raises(ValueError, match="deep_supervision"):
        denoiser_from_plans(make_plans(2, "concat", deep_supervision=True), "c", 1)


def test_prompt_block_selects_rater_map():
    ops = conv_ops(2)
    torch.manual_seed(0)
    pb = PromptBlock(6, num_raters=4, num_prompts=3, prompt_dim=2, ops=ops).eval()
    x = torch.randn(2, 6, 4, 4)
    torch.testing.assert_close(pb(x, torch.tensor([1, 3])), x)  # zero-init output projection => identity
    w = pb.prompt_weights(x)
    torch.testing.assert_close(w.sum(1), torch.ones(2))
    perturb(pb.out, std=0.5)
    with torch.no_grad():
        both = pb(x, torch.tensor([1, 3]))
        # each row only depends on its own rater id
        torch.testing.assert_close(both[:1], pb(x[:1], torch.tensor([1])), rtol=0, atol=1e-5)
        torch.testing.assert_close(both[1:], pb(x[1:], torch.tensor([3])), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_paper_prompt_block_one_map_per_rater_and_rater_dependent_output(dims):
    """The official design: R rater maps from [features, prompt]; only the requested rater's map is
    concatenated, then channel attention and a 1x1 conv back to the feature width."""
    from diffoseg_auto.network.prompt_block import PaperPromptBlock

    ops = conv_ops(dims)
    torch.manual_seed(0)
    pb = PaperPromptBlock(6, num_raters=4, num_prompts=3, prompt_dim=2, ops=ops).eval()
    x = torch.randn(2, 6, *([4] * dims))
    with torch.no_grad():
        maps = pb.rater_maps(torch.cat([x, torch.zeros(2, 2, *([4] * dims))], 1))
        assert maps.shape == (2, 4, *([4] * dims))
        a, b = pb(x, torch.tensor([0, 0])), pb(x, torch.tensor([2, 2]))
        assert a.shape == x.shape
        assert (a - b).abs().max() > 1e-4  # the rater changes the output
        mixed = pb(x, torch.tensor([0, 2]))  # each row depends on its own rater only
        torch.testing.assert_close(mixed[0], a[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(mixed[1], b[1], rtol=0, atol=1e-5)
    assert sum(p.numel() for p in pb.prompts) == 3 * 2 * 8 ** dims


@pytest.mark.parametrize("denoiser", ["cached_encoder", "concat", "reference_openai"])
def test_stage2_prompt_block_choice_from_plans(denoiser):
    from diffoseg_auto.network.prompt_block import PaperPromptBlock

    plans = make_plans(2, denoiser)
    plans.configurations["c"].stage2.prompt_block = "paper"
    s2 = build(plans, 2)
    assert isinstance(s2.prompt_block, PaperPromptBlock) and s2.prompt_block.rater_maps[-3].out_channels == 3
    img, x_t, t = inputs(plans)
    out = s2(img, x_t, t, torch.tensor([0, 2]))
    assert out.shape == x_t.shape and torch.isfinite(out).all()
    # Stage I weights transfer into it; only the Stage II modules stay at their init
    missing = transfer_stage1_weights(s2, build(plans, 1).state_dict())
    assert missing and all(n.startswith(s2.stage2_param_prefixes) for n in missing)
    plans.configurations["c"].stage2.prompt_block = "film"
    with pytest.raises(ValueError, match="prompt_block must be one of"):
        build(plans, 2)


@pytest.mark.parametrize("dims", [2, 3])
def test_rater_input_map_and_pointwise_head_equal_the_plain_convolutions(dims):
    from diffoseg_auto.network.blocks import pointwise_conv, rater_input_map, rater_planes

    torch.manual_seed(0)
    conv_op = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    spatial = (9, 6) if dims == 2 else (5, 6, 4)
    conv = conv_op(5, 7, 3, 1, padding=1, bias=False)
    onehot = torch.nn.functional.one_hot(torch.tensor([0, 3, 4, 3]), 5).float()
    torch.testing.assert_close(rater_input_map(conv, onehot, spatial), conv(rater_planes(onehot, spatial)))
    head = conv_op(7, 2, 1)
    x = torch.randn(3, 7, *spatial)
    torch.testing.assert_close(pointwise_conv(head, x), head(x))


def test_channels_last_instance_norm_equals_the_stock_instance_norm():
    from diffoseg_auto.network.blocks import ChannelsLastInstanceNorm2d, film

    torch.manual_seed(0)
    norm = ChannelsLastInstanceNorm2d(6, eps=1e-5, affine=True)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    stock = nn.InstanceNorm2d(6, eps=1e-5, affine=True)
    stock.load_state_dict(norm.state_dict())  # same parameters, same checkpoint keys
    x = (torch.randn(3, 6, 9, 7) * 3 + 1).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = norm(x)
        expected = stock(x.contiguous())
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # per sample and per channel: mean bias, std |weight| (each sample normalised on its own)
    o = out.double()
    torch.testing.assert_close(o.mean(dim=(2, 3)), norm.bias.double().expand(3, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(o.std(dim=(2, 3), unbiased=False), norm.weight.double().abs().expand(3, 6),
                               atol=1e-3, rtol=0)
    with torch.no_grad():  # bfloat16 (CPU autocast) too, to bfloat16 precision
        out16 = norm(x.bfloat16())
    assert out16.dtype == torch.bfloat16 and out16.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out16.float(), expected, atol=0.05, rtol=0.02)
    # the FiLM that follows a stage's first norm, folded into the same pass, in both precisions
    params = torch.randn(3, 12)
    with torch.no_grad():
        expected_film = film(expected, params)
        out_film = norm.forward_film(x, params)
        out_film16 = norm.forward_film(x.bfloat16(), params)
    assert out_film.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_film, expected_film, atol=1e-5, rtol=1e-5)
    assert out_film16.dtype == torch.bfloat16
    torch.testing.assert_close(out_film16.float(), expected_film, atol=0.1, rtol=0.02)
    # without affine parameters
    plain, stock_plain = ChannelsLastInstanceNorm2d(6, affine=False), nn.InstanceNorm2d(6, affine=False)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), stock_plain(x.contiguous()), atol=1e-5, rtol=1e-5)
    # training (grad enabled) takes the stock path and still matches, with gradients
    x.requires_grad_(True)
    out_train = norm(x)
    torch.testing.assert_close(out_train, expected, atol=1e-5, rtol=1e-5)
    out_train.sum().backward()
    assert x.grad is not None and norm.weight.grad is not None


def test_the_2d_instance_norm_of_the_plans_is_the_channels_last_one():
    from diffoseg_auto.network.blocks import ChannelsLastInstanceNorm2d
    from diffoseg_auto.plans.network_arguments import unet_arguments

    unet = unet_arguments(make_plans(2).configurations["c"])  # the plans' default norm: instance
    assert unet.ops().norm_op is ChannelsLastInstanceNorm2d
    assert conv_ops(3, unet.norm).norm_op is nn.InstanceNorm3d
