"""How many rows (window x mirroring x sample/prompt) one batched denoiser call holds.

Every row of a call shares the step's x_t layout and the timestep, so the work of a sampling step
is one big batch instead of many small ones; the plans' ``inference.batch_memory_mb`` caps it. The
per-row estimate counts what the no-grad denoiser holds at once: the x_t path's skips and the
expanded image cache (one tensor per stage each), a few working tensors at full resolution and the
input/output maps, all in float32 (a safe side for bf16 runs).
"""
from __future__ import annotations

import math

import numpy as np

from diffoseg_auto.plans.plans import ConfigurationPlan


def denoise_path_widths(cfg: ConfigurationPlan) -> list[int]:
    """Channels per stage of the part that runs at every step (the light x_t path of cached_encoder)."""
    a = cfg.architecture
    if a.denoiser == "cached_encoder":
        from diffoseg_auto.network.unet_cached import light_widths

        return light_widths(list(a.features_per_stage), a.x_t_width_divisor)
    return [int(f) for f in a.features_per_stage]


def bytes_per_row(cfg: ConfigurationPlan, num_classes: int) -> int:
    a = cfg.architecture
    widths = denoise_path_widths(cfg)
    vox = [int(np.prod(cfg.patch_size))]
    for s in a.strides[1:]:
        vox.append(max(1, vox[-1] // int(np.prod(s))))
    skips = sum(w * v for w, v in zip(widths, vox))
    working = 4 * 2 * widths[0] * vox[0]  # decoder concat + conv/norm outputs at full resolution
    io = 4 * num_classes * vox[0]          # x_t, logits, probabilities, mirrored copy
    return 4 * (2 * skips + working + io)


def rows_per_call(cfg: ConfigurationPlan, num_classes: int) -> int:
    return max(1, int(cfg.inference.batch_memory_mb) * 2 ** 20 // bytes_per_row(cfg, num_classes))


def split_work(num_windows: int, rows_per_window_sample: int, num_samples: int, max_rows: int) -> tuple[int, int]:
    """(windows per call, samples per call) so that windows x rows_per_window_sample x samples <= max_rows.

    ``rows_per_window_sample``: mirrorings x folds handled in the same call. All samples of a window
    stay in one call when they fit; calls are balanced (9 windows at 4 per call -> 3, 3, 3)."""
    per_window = rows_per_window_sample * num_samples
    if per_window <= max_rows:
        wpc = max(1, max_rows // per_window)
        calls = math.ceil(num_windows / wpc)
        return math.ceil(num_windows / calls), num_samples
    spc = max(1, max_rows // rows_per_window_sample)
    calls = math.ceil(num_samples / spc)
    return 1, math.ceil(num_samples / calls)
