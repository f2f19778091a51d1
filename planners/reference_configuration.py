"""The DiffOSeg paper's reference configuration, expressed as one more configuration of our plans.

``add_reference_configuration`` copies a 2D base configuration (default ``2d``) and replaces
network, diffusion and optimisation settings by those of the official DiffOSeg code
(github.com/string-ellipses/DiffOSeg, ``params.yml`` and ``ddpm/models/unet_openai``, itself built
on CCDM), so that the paper's setup can be trained and benchmarked with our trainer, predictor
and evaluation on the SAME preprocessed data (data_identifier, spacing, normalisation are the
base's):

- network: OpenAI/ADM U-Net (``denoiser = "reference_openai"``), base 32 channels, 2 residual
  blocks per level, channel multipliers (1, 1, 2, 3, 4) (the official default for 128x128
  inputs), self-attention where the feature map is 1/8 and 1/16 of the patch (the official
  ``attention_resolutions`` are downsampling factors; at 128x128 that is 16x16 and 8x8), 4 heads
  (official: 32 channels per head, i.e. 3-4 heads at these widths);
- diffusion: categorical, T = 250, cosine schedule (no resolution shift), 250 sampling steps; the
  network's x0 output read as p(x0 | x_t) (``diffusion.x0_given_xt = "network"``), final argmax of it;
- optimiser: Adam, lr 1e-4, no weight decay, linear decay (official ``polynomial`` with power 1;
  ours ends at 0 instead of 1e-6), Stage II also at 1e-4;
- batch size 12 (official ``params.yml``; CCDM's LIDC setting is 16), patch 128x128.

- Stage I target ``training.consensus_target = "intersection"`` (the official code fuses the
  raters' masks by an integer cast of their mean, i.e. their intersection) and Stage II's
  ``stage2.prompt_block = "paper"`` (the official block's design).

Kept from the base on purpose:
- EMA decay (official Polyak 0.9999), gradient clipping, epochs / iterations, augmentation,
  inference settings and number of samples.

Command line: ``diffoseg_add_reference_configuration -d ID [-c BASE] [-n NAME]``.
"""
from __future__ import annotations

import argparse
import copy
import sys
from typing import Sequence

from diffoseg_auto.plans.plans import Plans, PlansValidationError, validate_configuration
from diffoseg_auto.utilities.command_runner import run_command

PAPER_PATCH = [128, 128]
PAPER_BATCH_SIZE = 12
PAPER_NUM_TIMESTEPS = 250
PAPER_SAMPLING_STEPS = 250
PAPER_LR = 1e-4
# official unet_openai defaults for 128x128 inputs; attention at these downsampling factors
PAPER_CHANNEL_MULT = [1, 1, 2, 3, 4]
PAPER_ATTENTION_DOWNSAMPLING = [8, 16]
PAPER_REFERENCE = {"base_channels": 32, "channel_mult": PAPER_CHANNEL_MULT, "num_res_blocks": 2, "num_heads": 4}

CONSENSUS_NOTE = ("consensus_target 'intersection' as the official code (integer cast of the raters' mean); "
                  "our configurations use 'vote' (documentation/method.md).")


def _choose_patch(base_patch: list[int], factor: int, where: str) -> tuple[list[int], str]:
    """The paper's 128x128 if the base uses it, else the base patch (the data was planned for it)."""
    patch = [int(p) for p in base_patch]
    if patch == PAPER_PATCH:
        return patch, "128x128 as in the paper."
    if any(p % factor for p in patch):
        raise PlansValidationError(
            f"{where}: base patch {patch} is not divisible by {factor} (the reference network downsamples "
            f"{len(PAPER_CHANNEL_MULT) - 1} times). Set the base configuration's patch_size to a multiple of {factor} "
            "(e.g. 128x128) or pick another base with -c.")
    return patch, (f"base patch {patch} used instead of the paper's 128x128: the preprocessed data is shared with "
                   "the base, whose patch was planned for it.")


def add_reference_configuration(plans: Plans, base_configuration: str = "2d",
                                name: str = "2d_paper_reference") -> Plans:
    """Add (or replace) configuration ``name``: the paper's settings on ``base_configuration``'s data.

    Inherits data_identifier, spacing, normalisation, resampling, augmentation, inference settings,
    EMA and epochs. Overrides the Stage I target (intersection), the prompt block (paper), architecture
    (reference_openai), diffusion (T = S = 250, cosine), optimiser (Adam 1e-4, no weight decay, linear
    decay), batch (12) and patch (128x128, or the base's patch when it
    differs; the notes say so). Modifies ``plans`` in place and returns it.
    """
    base = plans.get_configuration(base_configuration)
    where = f"plans '{plans.plans_name}' of {plans.dataset_name}, configuration '{base_configuration}'"
    if name == base_configuration:
        raise PlansValidationError(f"{where}: the reference configuration needs its own name, not '{name}' (-n).")
    if base.spatial_dims != 2:
        raise PlansValidationError(f"{where}: the paper's network is 2D but this configuration is {base.spatial_dims}D. "
                                   "Use a 2D base configuration (-c 2d).")
    factor = 2 ** (len(PAPER_CHANNEL_MULT) - 1)
    patch, patch_note = _choose_patch(base.patch_size, factor, where)

    cfg = copy.deepcopy(base)
    cfg.patch_size = patch
    cfg.batch_size = PAPER_BATCH_SIZE
    # attention where the map is 1/8 and 1/16 of the patch (= 16 and 8 at 128x128), as the official levels
    attention = [min(patch) // d for d in PAPER_ATTENTION_DOWNSAMPLING]
    cfg.architecture.denoiser = "reference_openai"
    cfg.architecture.reference = {**copy.deepcopy(PAPER_REFERENCE), "attention_resolutions": attention}
    cfg.architecture.deep_supervision = False
    cfg.diffusion.num_timesteps = PAPER_NUM_TIMESTEPS
    cfg.diffusion.sampling_steps = PAPER_SAMPLING_STEPS
    cfg.diffusion.schedule = "cosine"
    cfg.diffusion.schedule_shift = 1.0
    # CCDM's readout: the network's x0 output is p(x0 | x_t) (decoder CE at t = 1 and final argmax on it)
    cfg.diffusion.x0_given_xt, cfg.diffusion.final_step = "network", "denoise"
    t = cfg.training
    t.optimizer, t.initial_lr, t.weight_decay = "adam", PAPER_LR, 0.0
    t.lr_schedule, t.poly_exponent = "poly", 1.0
    t.consensus_target = "intersection"
    t.x0_ce_weight = 0.0  # the paper's loss is the KL alone
    cfg.stage2.initial_lr = PAPER_LR
    cfg.stage2.prompt_block = "paper"
    cfg.notes = {
        "purpose": f"DiffOSeg paper reference configuration on the data of '{base_configuration}' "
                   f"(data_identifier '{cfg.data_identifier}' is shared: no extra preprocessing).",
        "source": "official DiffOSeg code (string-ellipses/DiffOSeg params.yml, unet_openai defaults for 128x128).",
        "patch_size": patch_note,
        "architecture": f"ADM U-Net, base 32, channel_mult {PAPER_CHANNEL_MULT}, 2 res blocks, attention at "
                        f"{attention} pixels (1/8 and 1/16 of the patch), 4 heads (official: 32 channels per head); "
                        "architecture.n_stages/strides are the base's and unused by this network.",
        "diffusion": "categorical, T = 250, cosine, 250 sampling steps (official).",
        "optimizer": "Adam lr 1e-4, no weight decay, linear decay to 0 (official: linear to 1e-6); Stage II lr 1e-4.",
        "batch_size": "12 as the official params.yml (CCDM's LIDC setting: 16).",
        "consensus_target": CONSENSUS_NOTE,
        "kept_from_base": "EMA decay (official Polyak 0.9999), grad clip, epochs, iterations, augmentation, "
                          "inference settings, num_samples.",
    }
    validate_configuration(cfg, f"plans '{plans.plans_name}': configurations.{name}")
    plans.configurations[name] = cfg
    return plans


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Add the DiffOSeg paper's reference configuration (ADM U-Net, T = S = 250, "
                                            "Adam 1e-4, batch 12, 128x128) to a dataset's plans; it reuses the base "
                                            "configuration's preprocessed data.")
    p.add_argument("-d", required=True, help="dataset id or name, e.g. 20 or Dataset020_LIDC")
    p.add_argument("-c", default="2d", help="2D base configuration whose data and settings are reused (default 2d)")
    p.add_argument("-n", default="2d_paper_reference", help="name of the new configuration (default 2d_paper_reference)")
    p.add_argument("-p", default="DiffOSegPlans", help="plans identifier (file <p>.json, default DiffOSegPlans)")
    return p


def run(argv: Sequence[str] | None = None) -> str:
    """Parse, add, save; returns the written plans file."""
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.plans.plans import load_plans, save_plans
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    a = build_parser().parse_args(argv)
    dataset = resolve_dataset_name(a.d)
    path = preprocessed_root() / dataset / f"{a.p}.json"
    plans = add_reference_configuration(load_plans(path), a.c, a.n)
    save_plans(plans, path)
    c = plans.configurations[a.n]
    print(f"{dataset}: added configuration '{a.n}' to {path} (patch {c.patch_size}, batch {c.batch_size}, "
          f"data '{c.data_identifier}'). Train with: diffoseg_train {dataset} {a.n} 0")
    return str(path)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (run through diffoseg_auto.cli.console)."""
    run(argv)


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_add_reference_configuration", main))
