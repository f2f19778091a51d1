"""Worker functions of diffoseg_predict (module level, so spawned processes can import them).

Kept apart from the predictor so that an export worker imports numpy/SimpleITK only, not the
networks (a spawned worker re-imports the module of its function: cheap imports start fast).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from diffoseg_auto.inference.export_prediction import export_case


def preprocess_job(job: tuple) -> tuple[str, np.ndarray, dict]:
    """(plans, configuration name, case, channel files) -> (case, preprocessed data (C,*S), properties)."""
    from diffoseg_auto.preprocessing.preprocessor import DefaultPreprocessor

    plans, configuration, case, files = job
    data, _, _, properties = DefaultPreprocessor(plans, configuration).run_case([Path(f) for f in files])
    return case, data, properties


def export_job(kwargs: dict) -> str:
    """export_case(**kwargs); returns the case identifier."""
    export_case(**kwargs)
    return kwargs["case"]
