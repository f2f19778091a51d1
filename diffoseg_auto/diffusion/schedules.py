"""Noise schedules as cumulative keep-probabilities alpha_bar (T+1,), float64, alpha_bar[0] = 1.

For uniform categorical diffusion q(x_t | x_0) = alpha_bar_t x_0 + (1 - alpha_bar_t) / K, so
alpha_bar_t is the probability that a voxel still "remembers" its class after t steps.
"""
from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "linear")


def _alpha_bar_from_betas(betas: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1.0 - betas, dim=0)])


def cosine_alpha_bar(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021): alpha_bar(t) = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) * pi/2).

    Betas derived from it are clipped to <= max_beta (the last one would be 1), so alpha_bar_T is
    small but non-zero.
    """
    t = torch.arange(num_timesteps + 1, dtype=torch.float64)
    f = torch.cos((t / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2
    ab = f / f[0]
    betas = (1.0 - ab[1:] / ab[:-1]).clamp(0.0, max_beta)
    return _alpha_bar_from_betas(betas)


def linear_alpha_bar(num_timesteps: int) -> torch.Tensor:
    """DDPM linear betas 1e-4..0.02 for T = 1000, scaled by 1000/T so other T cover the same noise range."""
    scale = 1000.0 / num_timesteps
    betas = torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64).clamp(max=0.999)
    return _alpha_bar_from_betas(betas)


def shift_alpha_bar(alpha_bar: torch.Tensor, shift: float) -> torch.Tensor:
    """SNR shift: logit(alpha_bar') = logit(alpha_bar) - 2 log(shift).

    Equivalent closed form alpha_bar / (alpha_bar + shift^2 (1 - alpha_bar)); keeps 1 -> 1 and
    0 -> 0, lowers every interior value for shift > 1 (more noise, useful for large inputs where
    neighbouring voxels make a noisy mask easier to read), shift = 1 is the identity.
    """
    if shift == 1.0:
        return alpha_bar.clone()
    return alpha_bar / (alpha_bar + shift ** 2 * (1.0 - alpha_bar))


def make_alpha_bar(schedule: str, num_timesteps: int, schedule_shift: float = 1.0) -> torch.Tensor:
    """alpha_bar (T+1,) float64 for a schedule name from the plans (`diffusion.schedule`)."""
    if int(num_timesteps) != num_timesteps or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive integer, got {num_timesteps}")
    if not schedule_shift >= 1.0:
        raise ValueError(f"schedule_shift must be >= 1 (1 = unchanged), got {schedule_shift}; "
                         f"fix diffusion.schedule_shift in the plans")
    if schedule == "cosine":
        ab = cosine_alpha_bar(int(num_timesteps))
    elif schedule == "linear":
        ab = linear_alpha_bar(int(num_timesteps))
    else:
        raise ValueError(f"Unknown noise schedule '{schedule}'; use one of {SCHEDULES} (diffusion.schedule in the plans)")
    return shift_alpha_bar(ab, float(schedule_shift))
