"""Temporary files of atomic writes: named so that no reader takes them for data, removed on the next run.

A temporary file starts with ``.tmp_`` (hidden from every listing that skips dotfiles) and, where the
writer does not need the real extension, ends with ``.part`` (so ``*.npz`` / ``*.pth`` globs miss it).
A kill -9 during a write leaves such a file behind; ``remove_stale_temp_files`` deletes them when the
next run of the same step starts (under that step's run lock, so no live writer is disturbed).
"""
from __future__ import annotations

import uuid
from pathlib import Path

TEMP_PREFIX = ".tmp_"
TEMP_SUFFIX = ".part"


def temp_path_for(path: str | Path, keep_extension: bool = False) -> Path:
    """A fresh temporary name beside ``path``; ``keep_extension`` for writers that pick the format by it."""
    path = Path(path)
    if keep_extension:
        return path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}_{path.name}"
    return path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}_{path.name}{TEMP_SUFFIX}"


def is_temp_file(path: str | Path) -> bool:
    return Path(path).name.startswith(TEMP_PREFIX)


def remove_stale_temp_files(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Delete the leftover temporary files in ``folder`` (and below); returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(f"{TEMP_PREFIX}*") if recursive else folder.glob(f"{TEMP_PREFIX}*")
    removed = []
    for p in sorted(found):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
