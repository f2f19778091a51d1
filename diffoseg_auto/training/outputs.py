"""The files that make a training run's results folder self-contained (paths: diffoseg_auto.results_layout)."""
from __future__ import annotations

from pathlib import Path

from diffoseg_auto.paths import preprocessed_dataset_folder
from diffoseg_auto.plans.plans import Plans, save_plans
from diffoseg_auto.utilities.file_ops import atomic_copy


def copy_plan_files(plans: Plans, dataset_name: str, trainer_dir: Path) -> None:
    """plans.json (the plans in use), dataset.json and dataset_fingerprint.json (when present)."""
    trainer_dir.mkdir(parents=True, exist_ok=True)
    save_plans(plans, trainer_dir / "plans.json")
    src = preprocessed_dataset_folder(dataset_name)
    for name in ("dataset.json", "dataset_fingerprint.json"):
        if (src / name).is_file():
            atomic_copy(src / name, trainer_dir / name)
