"""Fixtures shared by the test files; shared helper code lives in the support/ package (test files never import each other)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from diffoseg_auto.paths import ENV_PREPROCESSED, ENV_RAW, ENV_RESULTS
from diffoseg_auto.utilities.command_runner import EPOCH_LOGGER
from support.toy_training import write_toy_training_dataset


@pytest.fixture(autouse=True)
def _restore_logging():
    """Undo what a command's configure_logging (-v/-q) did: handlers, root level, epoch-line level."""
    root, epochs = logging.getLogger(), logging.getLogger(EPOCH_LOGGER)
    handlers, root_level, epoch_level = list(root.handlers), root.level, epochs.level
    yield
    for h in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(h)
    root.setLevel(root_level)
    epochs.setLevel(epoch_level)


@pytest.fixture
def env_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point $diffoseg_raw / $diffoseg_preprocessed / $diffoseg_results at fresh tmp folders.

    Returns {"raw": ..., "preprocessed": ..., "results": ...}; the folders exist.
    """
    folders = {
        "raw": tmp_path / "diffoseg_raw",
        "preprocessed": tmp_path / "diffoseg_preprocessed",
        "results": tmp_path / "diffoseg_results",
    }
    for env, key in ((ENV_RAW, "raw"), (ENV_PREPROCESSED, "preprocessed"), (ENV_RESULTS, "results")):
        folders[key].mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(env, str(folders[key]))
    return folders


@pytest.fixture
def no_env_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset the three environment variables (to test the 'variable not set' errors)."""
    for env in (ENV_RAW, ENV_PREPROCESSED, ENV_RESULTS):
        monkeypatch.delenv(env, raising=False)


@pytest.fixture
def toy(env_folders: dict[str, Path]) -> dict[str, Path]:
    """env_folders with support.toy_training.DATASET preprocessed (4 cases, 3 raters, tiny plans)."""
    write_toy_training_dataset(env_folders["preprocessed"])
    return env_folders
