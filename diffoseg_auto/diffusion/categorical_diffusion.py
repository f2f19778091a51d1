"""Uniform-noise categorical diffusion (CCDM / DiffOSeg) and its respaced ancestral sampler.

Tensors are (B, K, *S) probabilities / one-hot over K classes (background included), t is a
LongTensor (B,). Schedule coefficients are kept in float64 and cast per call, so that small
quantities such as 1 - alpha_bar_1 are not lost to float32 cancellation.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from diffoseg_auto.diffusion.schedules import make_alpha_bar
from diffoseg_auto.configuration import FINAL_STEPS, X0_READOUTS


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """Integer labels (B, *S) -> float32 one-hot (B, K, *S)."""
    if labels.dtype.is_floating_point:
        raise TypeError(f"one_hot expects integer labels, got {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"Labels must lie in 0..{num_classes - 1}, found range "
                         f"{int(labels.min())}..{int(labels.max())}; check num_classes / the label values")
    return _one_hot(labels, num_classes)


def _one_hot(labels: Tensor, num_classes: int) -> Tensor:
    # no range check: for labels we drew ourselves (a check would force a GPU sync per step)
    return F.one_hot(labels.long(), num_classes).movedim(-1, 1).float()


def sample_categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw one class per voxel from probs (B, K, *S) -> labels (B, *S).

    Inverse-CDF with exactly one uniform per voxel, so the random stream consumed per call is fixed
    (needed for reproducible, step-count-independent random order in the sampler).
    """
    gen_device = generator.device if generator is not None else probs.device
    u = torch.rand((probs.shape[0], 1, *probs.shape[2:]), generator=generator, device=gen_device)
    cdf = probs.cumsum(dim=1)
    u = u.to(probs.device, probs.dtype) * cdf[:, -1:]  # scale by the total: robust to sums of 0.99999
    return (cdf <= u).sum(dim=1).clamp_(max=probs.shape[1] - 1)


class CategoricalDiffusion:
    """q(x_t | x_0) = alpha_bar_t x_0 + (1 - alpha_bar_t)/K; see documentation/method.md, "Diffusion"."""

    def __init__(self, num_classes: int, num_timesteps: int, schedule: str = "cosine", schedule_shift: float = 1.0,
                 x0_given_xt: str = "network"):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
        if x0_given_xt not in X0_READOUTS:
            raise ValueError(f"x0_given_xt must be one of {X0_READOUTS}, got '{x0_given_xt}'")
        self.x0_given_xt = x0_given_xt
        self.num_classes = int(num_classes)
        self.num_timesteps = int(num_timesteps)
        self.schedule = schedule
        self.schedule_shift = float(schedule_shift)
        self.alpha_bar: Tensor = make_alpha_bar(schedule, self.num_timesteps, self.schedule_shift)  # (T+1,) float64, CPU

    # ---------------------------------------------------------------- helpers
    def _check_t(self, t: Tensor, name: str, lo: int) -> Tensor:
        t = torch.as_tensor(t).long().reshape(-1).cpu()
        if t.numel() and (int(t.min()) < lo or int(t.max()) > self.num_timesteps):
            raise ValueError(f"{name} must lie in {lo}..{self.num_timesteps}, got {t.tolist()}")
        return t

    @staticmethod
    def _bcast(v: Tensor, like: Tensor) -> Tensor:
        """float64 (B,) -> (B, 1, ..., 1) in like's dtype/device."""
        return v.reshape(-1, *([1] * (like.ndim - 1))).to(like.device, like.dtype)

    # ---------------------------------------------------------------- forward process
    def q_xt_given_x0(self, x0_probs: Tensor, t: Tensor) -> Tensor:
        t = self._check_t(t, "t", 0)
        ab = self.alpha_bar[t]
        return self._bcast(ab, x0_probs) * x0_probs + self._bcast((1.0 - ab) / self.num_classes, x0_probs)

    def q_sample(self, x0_probs: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        # the marginal is linear in x0, so for a soft x0 it already is the mixture over x0
        labels = sample_categorical(self.q_xt_given_x0(x0_probs, t), generator)
        return _one_hot(labels, self.num_classes).to(x0_probs.dtype)

    def q_posterior(self, x_t: Tensor, x0_probs: Tensor, t: Tensor, s: Tensor | None = None) -> Tensor:
        """q(x_s | x_t, x0 ~ p) by Bayes for one-hot x_t, 0 <= s < t, and a per-voxel distribution p over x0.

        The joint is p(x0=c) q(x_s=i | x0=c) q(x_t | x_s=i); conditioning on the observed x_t weights each
        component by its likelihood q(x_t | x0=c), which leaves CCDM/D3PM's single normaliser:
            result_i ∝ theta_i * (alpha_bar_s p_i + (1 - alpha_bar_s)/K),
            theta_i = q(x_t | x_s=i) = a x_t,i + (1-a)/K,   a = alpha_bar_t / alpha_bar_s.
        For one-hot p it is the usual posterior; for the network's p it is D3PM's reverse step.
        """
        t_cpu = self._check_t(t, "t", 1)
        s_cpu = t_cpu - 1 if s is None else self._check_t(s, "s", 0)
        if s_cpu.shape != t_cpu.shape or bool((s_cpu >= t_cpu).any()):
            raise ValueError(f"q_posterior needs s < t per sample, got t={t_cpu.tolist()} s={s_cpu.tolist()}")
        # half precision (autocast) would flush (1 - alpha_bar_1)/K-sized terms to 0: compute in >= float32
        dtype = torch.promote_types(torch.promote_types(x_t.dtype, x0_probs.dtype), torch.float32)
        x_t, x0_probs = x_t.to(dtype), x0_probs.to(dtype)
        K = self.num_classes
        ab_s = self.alpha_bar[s_cpu]
        a_ts = self.alpha_bar[t_cpu] / ab_s
        theta = self._bcast(a_ts, x_t) * x_t + self._bcast((1.0 - a_ts) / K, x_t)
        prior_s = self._bcast(ab_s, x0_probs) * x0_probs + self._bcast((1.0 - ab_s) / K, x0_probs)
        post = theta * prior_s
        return post / post.sum(dim=1, keepdim=True).clamp_min(torch.finfo(post.dtype).tiny)

    def x0_posterior(self, x_t: Tensor, x0_probs: Tensor, t: Tensor) -> Tensor:
        """p(x0 | x_t) as read from the network's x0 output (``x0_given_xt``, see __init__'s plans option).

        'bayes': q_posterior(x_t, p, t, s=0). The KL term trains p inside q_posterior, whose single normaliser
        weights p's classes by q(x_t | x0) again; there p plays the part of x0's distribution *before* x_t's
        own voxel is seen, so reading p itself as p(x0 | x_t) (CE loss, final step: 'network') counts the
        voxel's x_t once too few, and training p towards p(x0 | x_t) by CE makes the sampler count it twice."""
        if self.x0_given_xt == "network":
            return x0_probs
        return self.q_posterior(x_t, x0_probs, t, torch.zeros_like(torch.as_tensor(t)))

    # ---------------------------------------------------------------- training
    def sample_timesteps(self, batch_size: int, device=None, generator: torch.Generator | None = None) -> Tensor:
        """t ~ Uniform{1..T}, one per sample (drawn on the generator's device, returned on `device`)."""
        gen_device = generator.device if generator is not None else device
        t = torch.randint(1, self.num_timesteps + 1, (batch_size,), generator=generator, device=gen_device)
        return t.to(device) if device is not None else t

    def training_loss(self, x0_target: Tensor, x0_pred_probs: Tensor, x_t: Tensor, t: Tensor, eps: float = 1e-8,
                      x0_ce_weight: float = 0.0) -> Tensor:
        """Per sample: KL(q(x_{t-1}|x_t,x0) || q(x_{t-1}|x_t,p0)) for t > 1, CE -sum x0 log p(x0|x_t) for t == 1
        (p(x0|x_t) = x0_posterior(x_t, p0, t)); each is a sum over classes, averaged over voxels, then over the batch.

        ``x0_ce_weight`` > 0 adds that weight x CE for t > 1 too (D3PM's hybrid loss). At high t both
        posteriors are close to uniform whatever x_0 is, so the KL term barely supervises the decisions
        made early in sampling (is this object there?); the CE term supervises p0 directly."""
        q_true = self.q_posterior(x_t, x0_target, t)
        q_pred = self.q_posterior(x_t, x0_pred_probs, t)
        kl = (q_true * (q_true.clamp_min(eps).log() - q_pred.clamp_min(eps).log())).sum(dim=1)
        p_x0 = self.x0_posterior(x_t, x0_pred_probs, t)
        ce = -(x0_target.to(q_pred.dtype) * p_x0.to(q_pred.dtype).clamp_min(eps).log()).sum(dim=1)
        is_last = self._bcast((self._check_t(t, "t", 1) == 1).double(), kl) > 0.5
        per_voxel = torch.where(is_last, ce, kl + x0_ce_weight * ce if x0_ce_weight else kl)
        return per_voxel.reshape(per_voxel.shape[0], -1).mean(dim=1).mean()

    # ---------------------------------------------------------------- sampling
    def timesteps_for_sampling(self, num_steps: int) -> list[int]:
        """S evenly spaced steps T = t_0 > t_1 > ... > t_{S-1} = 1 (rounded; unique because spacing (T-1)/(S-1) >= 1).

        The chain must end at t = 1: the final argmax of p(x0 | x_1) is taken where almost no voxel is
        still noise (ending at round(T/S) left ~1/S of the schedule's noise in the last input)."""
        T = self.num_timesteps
        if not 1 <= num_steps <= T:
            raise ValueError(f"num_steps (sampling_steps) must be in 1..{T}, got {num_steps}")
        if num_steps == 1:
            return [T]
        return [int(T - k * (T - 1) / (num_steps - 1) + 0.5) for k in range(num_steps)]

    @torch.no_grad()
    def sample(self, denoise_fn: Callable[[Tensor, Tensor], Tensor], shape: tuple[int, ...], num_steps: int,
               final_step: str = "argmax", generator: torch.Generator | None = None, device=None,
               x_T: Tensor | None = None, return_probs: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Respaced ancestral sampling: x_T uniform, then x_s ~ q(x_s | x_t, x0 ~ p0) (Bayes, see q_posterior) per step.

        Random numbers: one uniform per voxel for x_T (unless given), then one per voxel per
        intermediate step, then one per voxel if final_step == 'sample'. With num_steps == T this is
        exactly the plain t -> t-1 loop.
        """
        if final_step not in FINAL_STEPS:
            raise ValueError(f"final_step must be one of {FINAL_STEPS}, got '{final_step}'")
        if len(shape) < 3 or shape[1] != self.num_classes:
            raise ValueError(f"shape must be (B, K={self.num_classes}, *spatial), got {tuple(shape)}")
        device = torch.device(device) if device is not None else (x_T.device if x_T is not None else torch.device("cpu"))
        if x_T is None:
            uniform = torch.full(shape, 1.0 / self.num_classes, device=device)
            x_t = _one_hot(sample_categorical(uniform, generator), self.num_classes)
        else:
            x_t = x_T.to(device, torch.float32)
        steps = self.timesteps_for_sampling(num_steps)
        B = shape[0]
        for i, t in enumerate(steps):
            t_vec = torch.full((B,), t, dtype=torch.long, device=device)
            p0 = denoise_fn(x_t, t_vec)
            if i + 1 < len(steps):
                s_vec = torch.full((B,), steps[i + 1], dtype=torch.long, device=device)
                x_t = _one_hot(sample_categorical(self.q_posterior(x_t, p0, t_vec, s_vec), generator), self.num_classes)
        if final_step == "denoise":  # the network's own x0 output: each voxel from its context (cleans stray voxels)
            labels = p0.argmax(dim=1)
        else:
            p0 = self.x0_posterior(x_t, p0, t_vec)  # p(x0 | x_1) (the last input), as the loss reads it at t = 1
            labels = p0.argmax(dim=1) if final_step == "argmax" else sample_categorical(p0, generator)
        return (labels, p0) if return_probs else labels
