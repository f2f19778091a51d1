"""Atomic writes: a kill during a save never leaves a broken file behind, and neither does a full disk (the
temporary is removed; the OSError ENOSPC names the file, which run_command reports in one line). Writers in C++
(SimpleITK's WriteImage, torch.save's zip writer) raise a RuntimeError without errno when the disk fills: a
message that says so, or a file system left with (almost) no free space, makes it the same ENOSPC."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from diffoseg_auto.errors import CorruptFileError, MissingFileError
from diffoseg_auto.utilities.temp_files import temp_path_for

ALMOST_FULL_BYTES = 1 << 20  # free space below this after a failed write: the disk filled (the temporary is still there)
_OUT_OF_SPACE_WORDS = ("no space", "space left", "disk full", "quota exceeded")


def atomic_write(path: str | Path, write_fn: Callable[[Path], None], keep_extension: bool = False) -> None:
    """Call ``write_fn(tmp_path)`` then rename tmp over ``path`` (same folder, same file system).

    The temporary file is hidden and, unless ``keep_extension`` (writers that pick the format by the file
    name, e.g. SimpleITK), lacks the real extension, so no reader takes it for data."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path, keep_extension)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno == errno.ENOSPC:  # name the file the user knows, not the temporary (which is removed below)
            raise disk_full_error(path) from e
        raise
    except RuntimeError as e:  # SimpleITK, torch.save: no errno
        if out_of_space(path, e):
            raise disk_full_error(path) from e
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def disk_full_error(path: str | Path) -> OSError:
    """The OSError ENOSPC that names ``path`` (run_command prints it as one line)."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def out_of_space(path: str | Path, error: Exception) -> bool:
    """Whether a write of ``path`` that raised ``error`` (no errno) failed for lack of space: its message says so,
    or ``path``'s file system has (almost) no free space left. A write that failed for another reason, with
    space to spare, is not called a full disk."""
    if any(w in str(error).lower() for w in _OUT_OF_SPACE_WORDS):
        return True
    try:
        return shutil.disk_usage(Path(path).parent).free < ALMOST_FULL_BYTES
    except OSError:
        return False


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary file: ``dst`` is the old file or the whole new one."""
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def save_json(obj: Any, path: str | Path, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default))


def load_json(path: str | Path, fix: str | None = None) -> Any:
    """The parsed file. A missing file raises MissingFileError, one that is empty, cut short or not JSON (a copy
    interrupted, a hand edit) CorruptFileError; both name the file and ``fix`` (default: write it again)."""
    path = Path(path)
    advice = fix or "Delete it and run the command that writes it again (or restore your copy)."
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFileError(f"{path}: does not exist. {advice}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        what = "is empty" if not path.read_bytes().strip() else f"is not valid JSON ({e})"
        raise CorruptFileError(f"{path}: {what}. {advice}") from None


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
