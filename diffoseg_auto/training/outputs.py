"""Where a training run writes, and the files that make its results folder self-contained."""
from __future__ import annotations

import shutil
from pathlib import Path

from diffoseg_auto.paths import preprocessed_root, results_root
from diffoseg_auto.plans.plans import Plans, save_plans


def trainer_folder(dataset_name: str, trainer_name: str, plans_name: str, configuration: str,
                   root: str | Path | None = None) -> Path:
    """$diffoseg_results/<dataset>/<Trainer>__<Plans>__<config>"""
    base = Path(root) if root is not None else results_root()
    return base / dataset_name / f"{trainer_name}__{plans_name}__{configuration}"


def fold_folder(trainer_dir: Path, fold: int | str) -> Path:
    return Path(trainer_dir) / f"fold_{fold}"


def stage_folder(trainer_dir: Path, fold: int | str, stage: int) -> Path:
    return fold_folder(trainer_dir, fold) / f"stage{stage}"


def preprocessed_dataset_folder(dataset_name: str) -> Path:
    return preprocessed_root() / dataset_name


def copy_plan_files(plans: Plans, dataset_name: str, trainer_dir: Path) -> None:
    """plans.json (the plans in use), dataset.json and dataset_fingerprint.json (when present)."""
    trainer_dir.mkdir(parents=True, exist_ok=True)
    save_plans(plans, trainer_dir / "plans.json")
    src = preprocessed_dataset_folder(dataset_name)
    for name in ("dataset.json", "dataset_fingerprint.json"):
        if (src / name).is_file():
            tmp = trainer_dir / f".tmp_{name}"
            shutil.copyfile(src / name, tmp)
            tmp.replace(trainer_dir / name)
