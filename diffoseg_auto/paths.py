"""The environment: the raw / preprocessed / results folder triad (as in nnU-Net) and the default
worker count. No other module reads these variables."""
from __future__ import annotations

import os
from pathlib import Path

from diffoseg_auto.errors import InvalidArgumentError, UserError

ENV_RAW = "diffoseg_raw"
ENV_PREPROCESSED = "diffoseg_preprocessed"
ENV_RESULTS = "diffoseg_results"
ENV_NUM_PROCESSES = "diffoseg_def_n_proc"


class EnvironmentVariableNotSetError(UserError, RuntimeError):
    """Raised when a command needs one of the three folders and its variable is unset."""


def _folder_from_env(name: str, purpose: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise EnvironmentVariableNotSetError(
            f"The environment variable '{name}' is not set, but it is needed for {purpose}. "
            f"Set it to a folder, e.g. `export {name}=/data/diffoseg/{name.split('_')[1]}` "
            f"(see documentation/getting_started.md)."
        )
    return Path(value)


def raw_root() -> Path:
    """Folder with DatasetXXX_Name raw datasets ($diffoseg_raw)."""
    return _folder_from_env(ENV_RAW, "reading or writing raw datasets")


def preprocessed_root() -> Path:
    """Folder with fingerprints, plans and preprocessed data ($diffoseg_preprocessed)."""
    return _folder_from_env(ENV_PREPROCESSED, "planning, preprocessing and training")


def results_root() -> Path:
    """Folder with trained models ($diffoseg_results)."""
    return _folder_from_env(ENV_RESULTS, "training results and prediction")


def preprocessed_dataset_folder(dataset_name: str) -> Path:
    """$diffoseg_preprocessed/<DatasetXXX_Name>"""
    return preprocessed_root() / dataset_name


def configured_roots() -> dict[str, Path]:
    """The folders whose variable is set, by name ('raw', 'preprocessed', 'results'); unset ones are left out."""
    named = {"raw": ENV_RAW, "preprocessed": ENV_PREPROCESSED, "results": ENV_RESULTS}
    return {key: Path(os.environ[env]) for key, env in named.items() if os.environ.get(env)}


def num_processes_override() -> int | None:
    """$diffoseg_def_n_proc as a positive int, None when unset."""
    value = os.environ.get(ENV_NUM_PROCESSES)
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise InvalidArgumentError(f"The environment variable '{ENV_NUM_PROCESSES}' must be a positive integer "
                                   f"(worker processes), got '{value}'. Unset it or e.g. `export {ENV_NUM_PROCESSES}=4`.")
    return int(value)
