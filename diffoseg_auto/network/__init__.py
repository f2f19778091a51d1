"""Denoiser networks: cached-encoder (default) and concat (paper) U-Nets, reference ADM U-Net,
Stage II prompt block, Stage I -> II weight transfer."""
from diffoseg_auto.network.denoiser_base import DenoiserBase, expand_cache
from diffoseg_auto.network.factory import build_denoiser, freeze_backbone, transfer_stage1_weights

__all__ = ["DenoiserBase", "expand_cache", "build_denoiser", "freeze_backbone", "transfer_stage1_weights"]
