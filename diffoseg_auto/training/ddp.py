"""Distributed data parallel helpers: init from torchrun's environment, launch with -num_gpus, reductions.

Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK set) the process group uses nccl on CUDA and
gloo otherwise. ``launch_torchrun`` runs torchrun (``--standalone --nproc_per_node N``)
on this same command, so ``diffoseg_train ... -num_gpus 2`` behaves like nnU-Net's.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in DIST_ENV)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_from_env(device_type: str) -> torch.device:
    """Join the process group torchrun set up; returns this rank's device (cuda:LOCAL_RANK or cpu)."""
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = device_type == "cuda" and torch.cuda.is_available()
    if use_cuda:  # before the process group: NCCL binds each rank's communicator to its current device
        torch.cuda.set_device(local_rank)
    if not is_distributed():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def cleanup() -> None:
    global _wait_group
    if is_distributed():
        dist.destroy_process_group()
    _wait_group = None


# rank 0 alone runs the end-of-stage validation (minutes to hours on a real dataset) while the others wait; NCCL's
# default 10-minute timeout would kill the job, so the waiting happens on a gloo group with this timeout instead
WAIT_TIMEOUT = timedelta(hours=int(os.environ.get("diffoseg_ddp_wait_hours", "24")))
_wait_group = None


def wait_for_rank0() -> None:
    """Every rank waits here until rank 0 arrives, however long rank 0 works alone (WAIT_TIMEOUT)."""
    global _wait_group
    if not is_distributed():
        return
    if _wait_group is None:  # collective: every rank creates it at its first wait, at the same point
        _wait_group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    dist.barrier(group=_wait_group)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (decisions that must stop all ranks together)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(value: float, device: torch.device) -> float:
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / world_size()


def broadcast_float(value: float, device: torch.device, src: int = 0) -> float:
    """Rank ``src``'s value on every rank (decisions that must agree, e.g. the seconds of a time budget spent)."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(t, src=src)
    return float(t.item())


def per_rank_batch_size(batch_size: int, world: int) -> int:
    return max(1, int(batch_size) // max(1, int(world)))


def launch_torchrun(num_processes: int, argv: list[str], module: str = "diffoseg_auto.training.run_training") -> int:
    """Run ``module`` with ``argv`` under torchrun with ``num_processes`` ranks; returns the exit code.

    torchrun runs in this process, so that a failed rank ends in exit code 1 without torchrun's traceback:
    the rank itself has said why (a user error as one line, through utilities.command_runner)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(["--standalone", f"--nproc_per_node={int(num_processes)}", "-m", module, *argv]))
    except ChildFailedError:
        return 1
    return 0
