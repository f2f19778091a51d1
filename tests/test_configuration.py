"""Shared constants (diffoseg_auto.configuration) and the worker-count override."""
from __future__ import annotations

import os

import pytest

from diffoseg_auto.configuration import (ANISOTROPY_THRESHOLD, Machine, default_num_processes, lowres_axis,
                                         worker_processes)
from diffoseg_auto.errors import UserError
from diffoseg_auto.paths import ENV_NUM_PROCESSES


@pytest.mark.parametrize("spacing, axis", [((1.0, 1.0, 1.0), None), ((ANISOTROPY_THRESHOLD, 1.0, 1.0), None),
                                           ((1.0, 3.5, 1.0), 1), ((5.0, 0.8, 0.8), 0), ((4.0, 1.0), None)])
def test_lowres_axis(spacing, axis):
    assert lowres_axis(spacing) == axis


def test_default_num_processes_and_override(monkeypatch):
    monkeypatch.delenv(ENV_NUM_PROCESSES, raising=False)
    assert default_num_processes() == max(1, min(2, os.cpu_count() or 1))
    monkeypatch.setenv(ENV_NUM_PROCESSES, "7")
    assert default_num_processes() == 7
    monkeypatch.setenv(ENV_NUM_PROCESSES, "zero")
    with pytest.raises(UserError, match=f"'{ENV_NUM_PROCESSES}' must be a positive integer"):
        default_num_processes()


@pytest.mark.parametrize("machine, device, ranks, workers", [
    (Machine(cores=16, memory_gb=128), "cuda", 1, 12),   # nnU-Net's 12 on a typical GPU node
    (Machine(cores=16, memory_gb=128), "cuda", 4, 3),    # 4 DDP ranks share the machine
    (Machine(cores=6, memory_gb=64), "cuda", 1, 5),      # one core stays with the main process
    (Machine(cores=32, memory_gb=16), "cuda", 1, 5),     # memory bounds it: 16 GB / 3 GB
    (Machine(cores=32, memory_gb=None), "cuda", 1, 12),  # memory unknown: cores and the cap
    (Machine(cores=1, memory_gb=2), "cuda", 1, 1),       # at least one
])
def test_worker_count_follows_a_gpu_machine(monkeypatch, machine, device, ranks, workers):
    monkeypatch.delenv(ENV_NUM_PROCESSES, raising=False)
    assert worker_processes(device, machine, ranks) == workers


def test_worker_count_on_the_cpu_and_the_override(monkeypatch):
    monkeypatch.delenv(ENV_NUM_PROCESSES, raising=False)
    big = Machine(cores=64, memory_gb=512)
    for device in ("cpu", "mps"):  # the training process needs the cores there: today's min(2, CPUs)
        assert worker_processes(device, big) == default_num_processes() == max(1, min(2, os.cpu_count() or 1))
    monkeypatch.setenv(ENV_NUM_PROCESSES, "5")
    assert worker_processes("cuda", big) == worker_processes("cpu", big) == 5
    here = Machine.this()
    assert here.cores >= 1 and (here.memory_gb is None or here.memory_gb > 0)
