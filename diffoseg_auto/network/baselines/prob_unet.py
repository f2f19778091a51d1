"""Probabilistic U-Net (Kohl et al., NeurIPS 2018).

- a U-Net with the plans' topology that returns its last decoder feature map;
- a prior net (image) and a posterior net (image + one-hot mask): the plans' U-Net encoder,
  global average pooling and a linear map to the mean and log-std of a diagonal Gaussian of
  ``LATENT_DIM`` dimensions;
- the latent is broadcast over the image, concatenated to the features and fused into the logits
  by three 1x1 convolutions.

Samples use z from the prior. The model has no rater conditioning: the prediction for every rater
is the majority of its N samples (its per-rater Dice is that of its consensus).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffoseg_auto.network.arguments import UNetArguments
from diffoseg_auto.network.baselines.base import BaselineNetwork, majority_labels
from diffoseg_auto.network.baselines.unet_builder import plain_encoder, plain_unet_features

LATENT_DIM = 6


class GaussianEncoder(nn.Module):
    """Encoder -> global average pool -> (mean, log-std) of a diagonal Gaussian."""

    def __init__(self, unet: UNetArguments, input_channels: int, latent_dim: int):
        super().__init__()
        self.encoder, channels = plain_encoder(unet, input_channels)
        self.head = nn.Linear(channels, 2 * latent_dim)
        nn.init.normal_(self.head.weight, std=1e-3)  # both nets start near N(0, I): the KL starts near 0
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_sigma = self.head(self.encoder(x).flatten(2).mean(2)).float().chunk(2, dim=1)
        return mu, log_sigma


def gaussian_kl(mu_q: Tensor, ls_q: Tensor, mu_p: Tensor, ls_p: Tensor) -> Tensor:
    """KL(N(mu_q, e^ls_q) || N(mu_p, e^ls_p)) of diagonal Gaussians, summed over dimensions -> (B,)."""
    return (ls_p - ls_q + (torch.exp(2 * ls_q) + (mu_q - mu_p) ** 2) / (2 * torch.exp(2 * ls_p)) - 0.5).sum(1)


class ProbabilisticUNet(BaselineNetwork):
    latent_dim = LATENT_DIM

    def __init__(self, unet: UNetArguments, num_input_channels: int, num_classes: int, num_raters: int):
        super().__init__()
        self.num_classes = num_classes
        self.unet, feats = plain_unet_features(unet, num_input_channels)
        self.prior = GaussianEncoder(unet, num_input_channels, LATENT_DIM)
        self.posterior = GaussianEncoder(unet, num_input_channels + num_classes, LATENT_DIM)
        conv = nn.Conv3d if unet.spatial_dims == 3 else nn.Conv2d
        self.fcomb = nn.Sequential(conv(feats + LATENT_DIM, feats, 1), nn.ReLU(inplace=True), conv(feats, feats, 1),
                                   nn.ReLU(inplace=True), conv(feats, self.num_classes, 1))

    def combine(self, features: Tensor, z: Tensor) -> Tensor:
        """Features (B, F, *P) and latents (B, D) -> logits (B, K, *P)."""
        zmap = z.to(features.dtype).view(*z.shape, *([1] * (features.ndim - 2))).expand(-1, -1, *features.shape[2:])
        return self.fcomb(torch.cat([features, zmap], 1))

    def forward(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Training pass: image (B,C,*P), labels (B,*P) -> logits from a posterior draw, KL per case (B,)."""
        onehot = F.one_hot(labels.long(), self.num_classes).movedim(-1, 1).to(x.dtype)
        mu_q, ls_q = self.posterior(torch.cat([x, onehot], 1))
        mu_p, ls_p = self.prior(x)
        z = mu_q + torch.exp(ls_q) * torch.randn_like(mu_q)
        return self.combine(self.unet(x), z), gaussian_kl(mu_q, ls_q, mu_p, ls_p)

    def window_probabilities(self, x: Tensor, eps: Tensor | None) -> Tensor:
        """Sample n uses z = mu_prior + sigma_prior * eps[n] on every window."""
        if eps is None:
            raise ValueError("ProbabilisticUNet needs one latent draw per sample (eps of shape (N, latent_dim))")
        feats = self.unet(x)
        mu, ls = self.prior(x)
        b, n = x.shape[0], eps.shape[0]
        z = (mu[:, None] + torch.exp(ls)[:, None] * eps[None]).flatten(0, 1)  # (B*N, D), row b*N + n
        logits = self.combine(feats.repeat_interleave(n, 0), z)
        return torch.softmax(logits.float(), 1).unflatten(0, (b, n))

    def to_predictions(self, outputs: np.ndarray, num_samples: int, num_raters: int,
                       num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        return outputs, np.repeat(majority_labels(outputs, num_classes)[None], num_raters, 0)
