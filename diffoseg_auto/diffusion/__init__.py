"""Categorical diffusion math and the respaced sampler (pure torch, no training logic)."""
from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion, one_hot, sample_categorical
from diffoseg_auto.diffusion.schedules import make_alpha_bar

__all__ = ["CategoricalDiffusion", "one_hot", "sample_categorical", "make_alpha_bar"]
