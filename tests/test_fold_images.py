import json

import pytest

from dataset_conversion.generate_toy_dataset import generate_toy_dataset
from diffoseg_auto.cli.fold_images import link_fold_images


def test_links_exactly_the_validation_cases(env_folders, tmp_path):
    generate_toy_dataset(env_folders["raw"] / "Dataset950_Links", dim=2, num_cases=6, num_raters=2, seed=1)
    pp = env_folders["preprocessed"] / "Dataset950_Links"
    pp.mkdir(parents=True)
    (pp / "splits_final.json").write_text(json.dumps([{"train": ["toy_000", "toy_001", "toy_002", "toy_003"],
                                                       "val": ["toy_004", "toy_005"]}]))
    cases = link_fold_images(950, 0, tmp_path / "val")
    assert cases == ["toy_004", "toy_005"]
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == ["toy_004_0000.nii.gz", "toy_005_0000.nii.gz"]
    with pytest.raises(ValueError, match="Fold 3"):
        link_fold_images(950, 3, tmp_path / "bad")


def test_seeded_sample_of_a_fold(env_folders, tmp_path):
    from diffoseg_auto.cli.fold_images import sample_cases

    cases = [f"c{i:02d}" for i in range(20)]
    pick = sample_cases(cases[::-1], 5, seed=0)
    assert pick == sample_cases(cases, 5, seed=0) and len(set(pick)) == 5 and pick == sorted(pick)
    assert set(pick) <= set(cases) and pick != sample_cases(cases, 5, seed=1)
    assert sample_cases(cases, None) == cases and sample_cases(cases, 50) == cases
    generate_toy_dataset(env_folders["raw"] / "Dataset951_Sample", dim=2, num_cases=6, num_raters=2, seed=1)
    pp = env_folders["preprocessed"] / "Dataset951_Sample"
    pp.mkdir(parents=True)
    (pp / "splits_final.json").write_text(json.dumps([{"train": ["toy_000"], "val": [f"toy_00{i}" for i in range(1, 6)]}]))
    got = link_fold_images(951, 0, tmp_path / "val", max_cases=2, seed=3)
    assert got == sample_cases([f"toy_00{i}" for i in range(1, 6)], 2, seed=3) and len(got) == 2
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == [f"{c}_0000.nii.gz" for c in got]
