"""Constants shared across packages, defined once (as nnU-Net's configuration.py)."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from diffoseg_auto.paths import num_processes_override

# a spacing is anisotropic when its largest axis is more than this many times its smallest
ANISOTROPY_THRESHOLD = 3.0


def lowres_axis(spacing: Sequence[float]) -> int | None:
    """The axis to treat separately (largest spacing) when a 3D spacing is anisotropic, else None."""
    sp = np.asarray(spacing, float)
    if len(sp) < 3 or sp.max() / sp.min() <= ANISOTROPY_THRESHOLD:
        return None
    return int(np.argmax(sp))


def default_num_processes() -> int:
    """Worker processes for preprocessing, augmentation, prediction and evaluation: $diffoseg_def_n_proc,
    else min(2, CPUs) (spawned workers cost memory and start-up time; 2 keeps a laptop responsive)."""
    override = num_processes_override()
    return override if override is not None else max(1, min(2, os.cpu_count() or 1))


# The names the plans may choose from, defined once below both the plans (which validate them) and the modules that
# implement them (which take them as plain torch-level arguments, never a plans object).
DENOISER_LAYOUTS = ("cached_encoder", "concat", "reference_openai")  # network.factory.build_denoiser builds them
PROMPT_BLOCKS = ("residual", "paper")  # network.prompt_block.make_prompt_block builds them
X0_READOUTS = ("network", "bayes")  # diffusion.categorical_diffusion.CategoricalDiffusion.x0_posterior implements them
FINAL_STEPS = ("denoise", "argmax", "sample")  # CategoricalDiffusion.sample implements them
