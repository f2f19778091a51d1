"""The whole real-data path on small subsets of real multi-rater data (../shared/data, README there):
convert -> subset -> plan_and_preprocess -> train both stages -> predict -> evaluate.

Images keep their real size (LIDC 128x128, BU-BIL 811x1024); only the network is made tiny and
the budgets minimal (a few iterations, 2 sampling steps, 2 samples), so the values asserted are
structural: counts, geometry, files per rater and metrics in their valid ranges.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch

from dataset_conversion.convert_bubil import convert_bubil
from dataset_conversion.convert_lidc import convert_lidc
from diffoseg_auto.dataset.raw_dataset import RawDataset
from support.pipeline import run_pipeline, subset_dataset
from support.shared_data import DATA

torch.set_num_threads(2)
SHARED = DATA
LIDC_NPZ = SHARED / "lidc_subset" / "lidc_subset.npz"
BUBIL = SHARED / "bubil_cells" / "BU-BIL_Dataset1"

pytestmark = [pytest.mark.slow,  # trains and predicts a whole dataset
              pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data folder {SHARED} is absent (see its README)")]


@pytest.mark.skipif(not LIDC_NPZ.is_file(), reason=f"{LIDC_NPZ} is absent")
def test_lidc_pipeline(env_folders):
    full = RawDataset(convert_lidc(LIDC_NPZ, 20))
    with np.load(LIDC_NPZ) as z:
        n = len(z["keys"])
    assert len(full.cases) == n == 71 and full.raters == ["rater0", "rater1", "rater2", "rater3"]
    assert all(full.rater_mask(c).all() for c in full.cases)  # an empty mask is an annotation, never dropped
    groups = full.case_groups
    by_group: dict[str, list[str]] = {}
    for c in full.cases:
        by_group.setdefault(groups[c], []).append(c)
    chosen = [cs[:2] for g, cs in sorted(by_group.items()) if len(cs) >= 2][:3]
    assert len(chosen) == 3
    raw = subset_dataset(full.folder, 21, "LIDCsmall", [c for cs in chosen for c in cs])
    # 3 patient groups -> 3 folds; fold 0 validates one whole patient (2 crops), 64x64 patch: several windows
    summary = run_pipeline(env_folders, raw, 21, patch=[64, 64], step_size=0.5)
    assert summary["num_cases"] == 2


@pytest.mark.skipif(not BUBIL.is_dir(), reason=f"{BUBIL} is absent")
def test_bubil_pipeline(env_folders):
    full = RawDataset(convert_bubil(BUBIL, 40))
    assert len(full.cases) == 35 and full.num_raters == 10
    raw = subset_dataset(full.folder, 41, "BUBILsmall", full.cases[:4])
    # full 811x1024 images; a 256x256 patch with step 1.0 tiles them with 4x4 windows. The trainer's own
    # validation (one chain per rater and case, 10 raters) is covered by the LIDC test and skipped here for time.
    summary = run_pipeline(env_folders, raw, 41, patch=[256, 256], step_size=1.0, trainer_validation=False)
    assert summary["num_cases"] == 1
