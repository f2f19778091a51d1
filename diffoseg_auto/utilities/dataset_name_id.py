"""Resolve `-d 170` or `-d Dataset170_NPC` to the dataset folder name, as nnU-Net does."""
from __future__ import annotations

import re

from diffoseg_auto.errors import InvalidArgumentError, UserError
from diffoseg_auto.paths import configured_roots

_NAME_RE = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-]+)$")


class DatasetNotFoundError(UserError, RuntimeError):
    pass


def dataset_name(dataset_id: int, name: str) -> str:
    """Canonical folder name: Dataset + 3-digit id + _ + name."""
    if not 0 <= int(dataset_id) <= 999:
        raise InvalidArgumentError(f"Dataset id must be between 0 and 999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise InvalidArgumentError(f"Dataset name '{name}' may only contain letters, digits, '_' and '-'")
    return f"Dataset{int(dataset_id):03d}_{name}"


def parse_dataset_name(folder_name: str) -> tuple[int, str]:
    m = _NAME_RE.match(folder_name)
    if m is None:
        raise InvalidArgumentError(f"'{folder_name}' is not of the form DatasetXXX_Name")
    return int(m.group(1)), m.group(2)


def resolve_dataset_name(id_or_name: str | int) -> str:
    """Return `DatasetXXX_Name` for an id (170, '170') or a full name.

    A full name is returned as is. An id is looked up in the raw, preprocessed and results
    folders; two different names with the same id are an error, as in nnU-Net.
    """
    s = str(id_or_name)
    if s.startswith("Dataset"):
        parse_dataset_name(s)
        return s
    if not s.isdigit():
        raise DatasetNotFoundError(f"'{s}' is neither a dataset id (e.g. 170) nor a name (e.g. Dataset170_NPC)")
    prefix = f"Dataset{int(s):03d}_"
    roots = list(configured_roots().values())
    found = sorted({p.name for r in roots if r.is_dir() for p in r.iterdir() if p.is_dir() and p.name.startswith(prefix)})
    if not found:
        searched = ", ".join(str(r) for r in roots) or "(no folder: set diffoseg_raw / diffoseg_preprocessed / diffoseg_results)"
        raise DatasetNotFoundError(
            f"No dataset with id {int(s)} found in {searched}. Convert or generate it first "
            f"(e.g. diffoseg_generate_toy_dataset -d {int(s)}) or check the environment variables."
        )
    if len(found) > 1:
        raise DatasetNotFoundError(f"Dataset id {int(s)} is ambiguous: {found}. Use the full name with -d.")
    return found[0]
