"""Generic fixtures shared by all test files (no module-specific setup here)."""
from __future__ import annotations

from pathlib import Path

import pytest

from diffoseg_auto.paths import ENV_PREPROCESSED, ENV_RAW, ENV_RESULTS


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than ~10 s (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one); run with -m cuda on a GPU machine")
