"""Worker processes die with their parent.

A kill -9 of the main process gives its workers no chance to be told; they would live on with
parent PID 1. ``watch_parent`` (called inside the worker) asks Linux to kill the worker when the
parent dies (prctl PR_SET_PDEATHSIG) and, on every platform, starts a thread that polls the parent
PID and exits the worker within ``interval`` seconds once the parent is gone.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

_PR_SET_PDEATHSIG = 1
_watching = False


def _set_pdeathsig() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the polling thread still covers it


def _poll(parent_pid: int, interval: float) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # parent gone: nothing will ever read our results
        time.sleep(interval)


def watch_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Exit this (worker) process when ``parent_pid`` is no longer its parent. Idempotent per process."""
    global _watching
    if _watching or os.getpid() == parent_pid:
        return
    _watching = True
    _set_pdeathsig()
    if os.getppid() != parent_pid:  # died before the prctl took effect
        os._exit(1)
    threading.Thread(target=_poll, args=(parent_pid, interval), daemon=True, name="parent-lifeline").start()


class LifelineTransform:
    """Wraps a batchgenerators transform: the first call inside a worker process starts ``watch_parent``.

    batchgenerators starts its workers itself, so the transform (which every worker receives) is the
    one place where our code runs inside them before the first batch is handed over."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform
        self.parent_pid = os.getpid()

    def __call__(self, **data_dict: Any) -> Any:
        if os.getpid() != self.parent_pid:
            watch_parent(self.parent_pid)
        return self.transform(**data_dict)

    def __repr__(self) -> str:
        return f"LifelineTransform({self.transform!r})"
