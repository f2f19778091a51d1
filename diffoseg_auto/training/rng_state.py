"""Capture and restore the global random streams, so a resumed training continues them."""
from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def capture_rng_state(extra: dict | None = None) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if extra:
        state.update(extra)
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "python" in state:
        random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        # a run resumed with fewer visible GPUs restores the streams that fit and says which were dropped
        saved, visible = list(state["cuda"]), torch.cuda.device_count()
        for i, s in enumerate(saved[:visible]):
            torch.cuda.set_rng_state(s, i)
        if len(saved) > visible:
            logger.warning(f"resume: the checkpoint has CUDA random streams of {len(saved)} GPU(s), {visible} are "
                           f"visible; restored {visible}, dropped those of GPU(s) {list(range(visible, len(saved)))}")
