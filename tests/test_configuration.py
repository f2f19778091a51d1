"""Shared constants (diffoseg_auto.configuration) and the worker-count override."""
from __future__ import annotations

import os

import pytest

from diffoseg_auto.configuration import ANISOTROPY_THRESHOLD, default_num_processes, lowres_axis
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
