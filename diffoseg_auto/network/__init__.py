"""Denoiser networks: cached-encoder (default) and concat (paper) U-Nets, reference ADM U-Net,
Stage II prompt block, Stage I -> II weight transfer. Built from torch-level arguments (``DenoiserArguments``);
diffoseg_auto/plans/network_arguments.py translates plans into them."""
from diffoseg_auto.network.arguments import DenoiserArguments, PromptArguments, UNetArguments
from diffoseg_auto.network.denoiser_base import DenoiserBase, expand_cache
from diffoseg_auto.network.factory import build_denoiser, freeze_backbone, transfer_stage1_weights

__all__ = ["DenoiserArguments", "PromptArguments", "UNetArguments", "DenoiserBase", "expand_cache", "build_denoiser",
           "freeze_backbone", "transfer_stage1_weights"]
