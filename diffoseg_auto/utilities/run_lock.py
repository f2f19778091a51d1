"""One run per output folder: a lock file that holds the PID and host of the run that owns the folder.

The file is created with O_EXCL, so two runs cannot both take it. A lock whose process is gone (same
host, PID dead or reused by another program) is stale and is taken over; a lock of a live run, or of
a run on another host (whose PID cannot be checked), makes the second run refuse with a message.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from diffoseg_auto.errors import UserError

logger = logging.getLogger(__name__)
LOCK_NAME = ".diffoseg_run.lock"


class RunLockedError(UserError):
    """Another run owns the output folder."""


def _process_start_time(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), to tell a reused PID from the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 overall; the command name may contain spaces


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner_alive(info: dict) -> bool:
    pid = int(info.get("pid", -1))
    if pid <= 0 or not pid_alive(pid):
        return False
    recorded, now = info.get("start_time"), _process_start_time(pid)
    return recorded is None or now is None or recorded == now


class RunLock:
    """``with RunLock(folder, "diffoseg_train"):`` owns ``folder/.diffoseg_run.lock`` for the block."""

    def __init__(self, folder: str | Path, what: str) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self.held = False

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": _process_start_time(os.getpid()),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join([self.what, *sys.argv[1:]])[:500]}
        for _ in range(3):  # a stale lock is removed and creation retried; another run may win that race
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise RunLockedError(f"{self.path}: could not take the lock (another run keeps taking it). Retry later.")

    def _handle_existing(self) -> None:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}  # half-written by a run killed at that instant: treat as stale
        if not info:
            self.path.unlink(missing_ok=True)
            return
        same_host = info.get("host") == socket.gethostname()
        if same_host and not _owner_alive(info):
            logger.warning(f"{self.what}: taking over the stale lock {self.path} of PID {info.get('pid')} "
                           "(no longer running)")
            self.path.unlink(missing_ok=True)
            return
        where = "" if same_host else f" on host {info.get('host')}"
        raise RunLockedError(
            f"{self.path.parent}: in use by PID {info.get('pid')}{where} since {info.get('started')} "
            f"({info.get('command', '?')}). Wait for that run to end or stop it; if it is surely gone, delete {self.path}.")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
