"""benchmarks/quality/real_data.py's CPU-sized configurations (`compare --add_configuration`) added to a plans JSON
resolve through the plans' inheritance to the intended spacing, patch, topology and preprocessed data."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.quality.real_data_compare import add_cpu_configuration
from dataset_conversion.generate_toy_dataset import generate_toy_dataset
from diffoseg_auto.plans.plans import load_plans
from planners.plan_and_preprocess_entrypoints import plan_and_preprocess



@pytest.fixture
def plans_file(env_folders) -> Path:
    raw = generate_toy_dataset(env_folders["raw"] / "Dataset951_ToyCpu", dim=2, num_cases=4, num_raters=2, seed=3)
    plan_and_preprocess(["-d", "951", "-np", "1", "-c", "2d", "--no_pp"])
    return env_folders["preprocessed"] / raw.name / "DiffOSegPlans.json"


def test_lite_halves_the_widths_and_reuses_the_2d_data(plans_file):
    add_cpu_configuration(plans_file, "2d_lite")
    plans = load_plans(plans_file)
    base, lite = plans.get_configuration("2d"), plans.get_configuration("2d_lite")
    assert lite.architecture.features_per_stage == [max(8, f // 2) for f in base.architecture.features_per_stage]
    assert lite.architecture.n_stages == base.architecture.n_stages
    assert lite.data_identifier == base.data_identifier  # same spacing and patch: no second preprocessing
    assert list(lite.spacing) == list(base.spacing) and list(lite.patch_size) == list(base.patch_size)
    assert lite.batch_size == base.batch_size


def test_eighthres_coarsens_the_spacing_and_cuts_the_stages(plans_file):
    add_cpu_configuration(plans_file, "2d_eighthres", batch_size=3)
    plans = load_plans(plans_file)
    base, cpu = plans.get_configuration("2d"), plans.get_configuration("2d_eighthres")
    assert list(cpu.spacing) == [8 * s for s in base.spacing]
    assert list(cpu.patch_size) == [128, 128] and cpu.batch_size == 3
    assert cpu.data_identifier != base.data_identifier
    assert cpu.architecture.n_stages == min(6, base.architecture.n_stages)
    assert cpu.architecture.features_per_stage == base.architecture.features_per_stage[:cpu.architecture.n_stages]
