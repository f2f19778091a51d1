"""Mixed precision: which autocast dtype a device gets, and the GradScaler that fp16 needs.

'auto' picks bf16 where the hardware computes it natively (CUDA GPUs with bf16, CPUs with
AVX512-BF16 or AMX), fp16 on older CUDA GPUs (training then needs a GradScaler: fp16 gradients
underflow), and float32 elsewhere. Only the network runs under autocast: the diffusion posterior
and the loss are computed in float32 by their callers (``float32_region``), because terms such as
(1 - alpha_bar_1)/K vanish in half precision.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from diffoseg_auto.errors import UserError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


class PrecisionError(UserError):
    """A precision the device cannot run."""


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN runs bf16 convolutions natively (else it emulates them slowly)."""
    cpu = getattr(torch, "cpu", None)
    checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
    return any(bool(f()) for f in checks if f is not None)


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Compute capability >= 8 (Ampere and later). torch.cuda.is_bf16_supported() also counts emulation by
    default, which would give V100 and T4 slow emulated bf16 instead of fp16 with a GradScaler."""
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None = plain float32."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision '{precision}': use one of {', '.join(PRECISIONS)}.")
    kind = torch.device(device).type
    if precision == "fp32" or kind == "mps":
        if precision not in ("fp32", "auto"):
            raise PrecisionError(f"precision {precision}: mixed precision is not supported on mps here; use fp32.")
        return None
    if kind == "cuda":
        bf16 = cuda_has_native_bf16(torch.device(device))
        if precision == "bf16" and not bf16:
            raise PrecisionError("precision bf16: this GPU has no bf16 support; use fp16 or auto.")
        return torch.float16 if precision == "fp16" or not bf16 else torch.bfloat16
    # cpu
    if precision == "fp16":
        raise PrecisionError("precision fp16 runs on CUDA only; on the CPU use bf16, fp32 or auto.")
    if precision == "bf16" or cpu_has_native_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Autocast region for the network (a no-op context for float32)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def float32_region(device: torch.device) -> AbstractContextManager:
    """Autocast switched off: the diffusion math inside stays in float32 even within a network's region."""
    return torch.autocast(torch.device(device).type, enabled=False)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling is needed for fp16 only (bf16 has float32's exponent range)."""
    kind = torch.device(device).type
    return torch.amp.GradScaler(kind if kind in ("cuda", "cpu") else "cpu", enabled=dtype == torch.float16)


def precision_name(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[dtype]
