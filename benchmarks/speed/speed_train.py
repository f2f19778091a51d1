"""speed.py train: a training iteration, a sampling step and an encode of our layouts against the paper's network."""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


SPEED = Path(__file__).resolve().parent / "speed.py"  # workers start through the command line


# ================================================================ train: a training iteration, our layouts against the paper's network
# Networks (Stage I unless --stage 2, K=2 classes, C=1 channel, 2D 128x128 as LIDC):
#   planned_cached   the planned nnU-Net-style 2D topology, cached_encoder layout (our default)
#   planned_concat   the same topology, concat layout (the paper's input layout on nnU-Net's U-Net)
#   reference        planners.reference_configuration: ADM-style U-Net of the official code (base 32,
#                    mult (1,1,2,3,4), attention at 16 and 8), batch 12
# The planned topology comes from --plans/--configuration when given, else from the planner's topology rules
# (planners.topology), else nnU-Net's 2D 128x128 topology written out. Per network: seconds per training iteration
# (forward, CategoricalDiffusion.training_loss, backward, AdamW step), seconds per sampling step (denoise with a
# cached encode, no grad), seconds per encode, parameters, and peak memory (CUDA: max_memory_allocated; CPU: peak RSS
# of a fresh worker process, minus its RSS after building the network). Each network runs in its own process so RSS
# peaks do not mix.

TRAIN_NETWORKS = ("planned_cached", "planned_concat", "reference")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _planned_architecture(plans_path: str | None, configuration: str):
    """(ArchitecturePlan, batch_size, source description)."""
    from diffoseg_auto.plans.plans import ArchitecturePlan, load_plans

    if plans_path:
        plans = load_plans(plans_path)
        cfg = plans.get_configuration(configuration)
        if cfg.spatial_dims != 2:
            raise SystemExit(f"{plans_path}: configuration '{configuration}' is {cfg.spatial_dims}D; this benchmark is 2D 128x128")
        return cfg.architecture, cfg.batch_size, f"plans {plans_path} [{configuration}]"
    try:
        from planners.topology import get_pool_and_conv_props

        _, strides, kernels, _, _ = get_pool_and_conv_props([1.0, 1.0], [128, 128])
        source = "planners.topology.get_pool_and_conv_props (spacing 1x1, patch 128x128)"
    except ImportError:
        strides = [[1, 1]] + [[2, 2]] * 5
        kernels = [[3, 3]] * 6
        source = "nnU-Net 2D 128x128 topology written out (planner not available)"
    n = len(strides)
    features = [min(32 * 2 ** s, 512) for s in range(n)]
    arch = ArchitecturePlan(n_stages=n, features_per_stage=features, kernel_sizes=kernels, strides=strides,
                            n_conv_per_stage=[2] * n, n_conv_per_stage_decoder=[2] * (n - 1))
    return arch, 12, source


def _plans_for(name: str, plans_path: str | None, configuration: str):
    import dataclasses

    from diffoseg_auto.plans.plans import ConfigurationPlan, Plans

    arch, batch, source = _planned_architecture(plans_path, configuration)
    layout = {"planned_cached": "cached_encoder", "planned_concat": "concat", "reference": "cached_encoder"}[name]
    arch = dataclasses.replace(arch, denoiser=layout, deep_supervision=False)
    cfg = ConfigurationPlan(data_identifier="bench", spatial_dims=2, patch_size=[128, 128], batch_size=batch,
                            spacing=[1.0, 1.0], median_image_size_in_voxels=[128, 128], normalization_schemes=["zscore"],
                            use_mask_for_norm=[False], resampling_order_data=3, resampling_order_seg=1,
                            architecture=arch)
    plans = Plans(dataset_name="Dataset000_Bench", plans_name="bench", num_classes=2,
                  raters=[f"rater{i}" for i in range(4)], num_input_channels=1, original_median_spacing=[1.0, 1.0],
                  original_median_shape=[128, 128], foreground_intensity_properties_per_channel={},
                  configurations={"2d": cfg})
    if name == "reference":  # the official code's network and batch, from planners.reference_configuration
        from planners.reference_configuration import add_reference_configuration

        add_reference_configuration(plans, "2d", "paper_reference")
        plans.configurations["2d"] = plans.configurations.pop("paper_reference")
        batch = plans.configurations["2d"].batch_size
    return plans, batch, source


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_worker(name: str, device_name: str, iterations: int, batch_size: int | None, stage: int,
               plans_path: str | None, configuration: str) -> dict:
    import torch

    from diffoseg_auto.plans.network_arguments import denoiser_from_plans

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    device = torch.device(device_name)
    plans, planned_batch, source = _plans_for(name, plans_path, configuration)
    b = batch_size or planned_batch
    torch.manual_seed(0)
    net = denoiser_from_plans(plans, "2d", stage).to(device)
    try:
        from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion

        diffusion = CategoricalDiffusion(2, 250)
        loss_name = "CategoricalDiffusion.training_loss"
    except ImportError:
        diffusion, loss_name = None, "cross entropy FALLBACK (diffoseg_auto.diffusion not available)"
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    img = torch.randn(b, 1, 128, 128, device=device)
    x0 = torch.nn.functional.one_hot((torch.rand(b, 128, 128, device=device) > 0.7).long(), 2).movedim(-1, 1).float()
    rater = torch.randint(0, plans.num_raters, (b,), device=device) if stage == 2 else None
    rss_built = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step() -> None:
        if diffusion is not None:
            t = diffusion.sample_timesteps(b, device=device)
            x_t = diffusion.q_sample(x0, t)
            loss = diffusion.training_loss(x0, torch.softmax(net(img, x_t, t, rater), 1), x_t, t)
        else:
            t = torch.randint(1, 251, (b,), device=device)
            loss = torch.nn.functional.cross_entropy(net(img, x0, t, rater), x0.argmax(1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    net.train()
    train_step()  # warm-up (allocator, cudnn autotune)
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        train_step()
    _sync(device)
    train_s = (time.perf_counter() - start) / iterations
    train_peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None

    net.eval()
    t = torch.full((b,), 125, device=device, dtype=torch.long)
    with torch.no_grad():
        cache = net.encode(img)
        net.denoise(cache, x0, t, rater)
        _sync(device)
        start = time.perf_counter()
        for _ in range(iterations):
            cache = net.encode(img)
        _sync(device)
        encode_s = (time.perf_counter() - start) / iterations
        start = time.perf_counter()
        for _ in range(iterations):
            net.denoise(cache, x0, t, rater)
        _sync(device)
        step_s = (time.perf_counter() - start) / iterations
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_built)
    return {"config": name, "device": device_name, "batch": b, "stage": stage,
            "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
            "train_s_per_iter": train_s, "train_it_per_s": 1 / train_s, "sample_step_s": step_s,
            "encode_s": encode_s, "train_peak_mb": train_peak if train_peak is not None else peak,
            "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "CPU peak RSS - RSS after build",
            "loss": loss_name, "topology_source": source}



def train(a: argparse.Namespace) -> None:
    if a.iterations < 1:
        a.parser.error("--iterations must be >= 1")
    if a._worker:
        print(json.dumps(train_worker(a._worker, a._device, a.iterations, a.batch_size, a.stage, a.plans, a.configuration)))
        return
    import torch

    devices = a.devices.split(",") if a.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    configs = a.configs.split(",")
    unknown = set(configs) - set(TRAIN_NETWORKS)
    if unknown:
        a.parser.error(f"unknown --configs {sorted(unknown)}; choose from {TRAIN_NETWORKS}")
    rows = []
    for dev in devices:
        for name in configs:
            cmd = [sys.executable, str(SPEED), "train", "--_worker", name, "--_device", dev,
                   "--iterations", str(a.iterations), "--stage", str(a.stage), "--configuration", a.configuration]
            cmd += ["--batch-size", str(a.batch_size)] if a.batch_size else []
            cmd += ["--plans", a.plans] if a.plans else []
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"benchmark worker {name} on {dev} failed:\n{res.stderr[-3000:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"  done {name} on {dev}", flush=True)
    print(f"topology: {rows[0]['topology_source']}")
    print(f"loss: {rows[0]['loss']}   memory: " + "; ".join(sorted({r['memory_kind'] for r in rows})))
    hdr = (f"{'config':16s} {'device':6s} {'batch':>5s} {'params M':>8s} {'s/iter':>8s} {'it/s':>7s} "
           f"{'step s':>8s} {'encode s':>8s} {'peak MB':>8s} {'train x':>8s} {'step x':>7s}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ref = next((q for q in rows if q["config"] == "reference" and q["device"] == r["device"]), None)
        tr = f"{ref['train_s_per_iter'] / r['train_s_per_iter']:.2f}" if ref else "-"
        st = f"{ref['sample_step_s'] / r['sample_step_s']:.2f}" if ref else "-"
        print(f"{r['config']:16s} {r['device']:6s} {r['batch']:5d} {r['params_M']:8.2f} {r['train_s_per_iter']:8.3f} "
              f"{r['train_it_per_s']:7.2f} {r['sample_step_s']:8.3f} {r['encode_s']:8.3f} {r['train_peak_mb']:8.0f} "
              f"{tr:>8s} {st:>7s}")
    print("train x / step x: speed-up relative to the reference network on the same device (>1 = faster).")
    print("sampling cost per case = steps x samples x windows x mirrorings sampling steps; the cached "
          "encoder adds windows x mirrorings encodes.")
