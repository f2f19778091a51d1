"""Constants shared across packages, defined once (as nnU-Net's configuration.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass
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


# a GPU trains (and predicts) faster than two augmentation / export workers feed it: on a GPU machine the worker
# count follows the machine, as nnU-Net's 12 augmentation processes do, bounded by its cores and memory
GPU_MAX_WORKERS = 12
WORKER_MEMORY_GB = 3.0  # per worker: a 3D batch's arrays, the transforms' copies and the process itself


@dataclass(frozen=True)
class Machine:
    """What the worker rule reads of a machine: usable CPU cores, physical memory (None: unknown)."""

    cores: int
    memory_gb: float | None

    @classmethod
    def this(cls) -> "Machine":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
        except (AttributeError, ValueError, OSError):
            memory = None
        return cls(max(1, cores), memory)


def worker_processes(device_type: str, machine: Machine | None = None, ranks: int = 1) -> int:
    """Augmentation workers of diffoseg_train and preprocessing / export workers of diffoseg_predict.

    $diffoseg_def_n_proc when set; on a CUDA device min(cores - 1, 12, memory / 3 GB) shared by the ``ranks``
    processes of the machine (DDP), at least 1 (the main process keeps a core to drive the GPU); else (CPU, MPS)
    default_num_processes(): min(2, CPUs), the training process being what needs the cores there."""
    override = num_processes_override()
    if override is not None or device_type != "cuda":
        return default_num_processes()
    m = machine or Machine.this()
    by_memory = GPU_MAX_WORKERS if m.memory_gb is None else int(m.memory_gb // WORKER_MEMORY_GB)
    return max(1, min(m.cores - 1, GPU_MAX_WORKERS, by_memory) // max(1, int(ranks)))
