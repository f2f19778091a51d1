"""The whole path on a raw dataset, shared by the end-to-end tests: plan_and_preprocess -> tiny
network -> train both stages -> predict held-out cases -> evaluate, asserting geometry, files and
metric ranges."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from diffoseg_auto.dataset.raw_dataset import DatasetDescription, RawDataset, write_dataset_json
from diffoseg_auto.evaluation.evaluate_entrypoint import evaluate_folder
from diffoseg_auto.evaluation.prediction_folder import load_samples_npz
from diffoseg_auto.inference.predict_entrypoint import predict_from_folder
from diffoseg_auto.io.image_io import geometry_matches, read_images, read_seg
from diffoseg_auto.plans.plans import load_plans, save_plans
from diffoseg_auto.preprocessing.case_storage import list_preprocessed_cases
from diffoseg_auto.training.run_training import run_training
from diffoseg_auto.training.training_request import ScheduleOverrides, TrainingRequest
from diffoseg_auto.training.splits import select_fold
from diffoseg_auto.utilities.file_ops import load_json
from planners.plan_and_preprocess_entrypoints import plan_and_preprocess

TRAINER_FOLDER = "DiffOSegTrainer__DiffOSegPlans__2d"


def subset_dataset(src: Path, dataset_id: int, name: str, cases: list[str]) -> Path:
    """A raw dataset with only ``cases`` of ``src`` (files copied unchanged, groups kept)."""
    ds = RawDataset(src)
    dst = src.parent / f"Dataset{dataset_id:03d}_{name}"
    images = ds.image_files_by_case()
    for case in cases:
        for f in images[case]:
            (dst / "imagesTr").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst / "imagesTr" / f.name)
        for r in ds.raters:
            (dst / "labelsTr" / r).mkdir(parents=True, exist_ok=True)
            if ds.label_file(r, case) is not None:
                shutil.copyfile(ds.label_file(r, case), dst / "labelsTr" / r / f"{case}{ds.file_ending}")
    dj = ds.dataset_json
    groups = {c: g for c, g in ds.case_groups.items() if c in cases}
    write_dataset_json(dst, DatasetDescription(name=name, channel_names=dj["channel_names"], labels=dj["labels"],
                                               raters=ds.raters, num_training=len(cases), file_ending=ds.file_ending,
                                               case_groups=groups or None,
                                               description=f"{len(cases)} cases of {src.name}"))
    return dst


def make_plans_tiny(plans_file: Path, patch: list[int], step_size: float) -> None:
    """Tiny 3-stage network and minimal sampling; the data settings stay as planned."""
    plans = load_plans(plans_file)
    c = plans.configurations["2d"]
    a = c.architecture
    a.n_stages, a.features_per_stage = 3, [4, 8, 16]
    a.kernel_sizes, a.strides = [[3, 3]] * 3, [[1, 1], [2, 2], [2, 2]]
    a.n_conv_per_stage, a.n_conv_per_stage_decoder = [1, 1, 1], [1, 1]
    a.time_embedding_dim, a.prompt_dim = 16, 4
    c.patch_size, c.batch_size = patch, 2
    c.diffusion.sampling_steps, c.diffusion.num_samples = 2, 2
    c.training.num_val_samples = 2
    c.inference.step_size, c.inference.use_mirroring = step_size, False
    save_plans(plans, plans_file)


def run_pipeline(env: dict[str, Path], raw: Path, dataset_id: int, patch: list[int], step_size: float,
                 trainer_validation: bool = True) -> dict:
    name = raw.name
    plan_and_preprocess(["-d", str(dataset_id), "-np", "1", "-c", "2d", "--verify_dataset_integrity"])
    pp = env["preprocessed"] / name
    cases = RawDataset(raw).cases
    plans = load_plans(pp / "DiffOSegPlans.json")
    assert plans.num_raters == RawDataset(raw).num_raters and plans.num_classes == 2
    assert list_preprocessed_cases(pp / plans.configurations["2d"].data_identifier) == cases
    make_plans_tiny(pp / "DiffOSegPlans.json", patch, step_size)

    run_training(TrainingRequest(dataset_id, "2d", 0, stage="both",
                                 schedule=ScheduleOverrides(num_epochs=1, iterations_per_epoch=2, val_iterations=1),
                                 final_validation=trainer_validation, device="cpu", num_workers=0))
    fold = env["results"] / name / TRAINER_FOLDER / "fold_0"
    for stage in ("stage1", "stage2"):
        assert (fold / stage / "checkpoint_final.pth").is_file()
        assert (fold / stage / "validation" / "summary.json").is_file() == trainer_validation
    assert (fold / "checkpoint_final.pth").is_file()

    _, val = select_fold(load_json(pp / "splits_final.json"), 0, cases)
    inp = env["raw"].parent / f"input_{dataset_id}"
    inp.mkdir()
    images = RawDataset(raw).image_files_by_case()
    for case in val:
        for f in images[case]:
            shutil.copyfile(f, inp / f.name)
    out = env["raw"].parent / f"pred_{dataset_id}"
    predicted = predict_from_folder(inp, out, dataset_id, "2d", [0], num_samples=2, sampling_steps=2,
                                    use_mirroring=False, step_size=step_size, device="cpu", save_samples=True,
                                    num_processes_preprocessing=1, num_processes_export=1)
    assert predicted == val
    ending = RawDataset(raw).file_ending
    for case in val:
        _, in_props = read_images(images[case])
        cons, p = read_seg(out / "consensus" / f"{case}{ending}")
        assert geometry_matches(p, in_props) == [] and set(np.unique(cons)) <= {0, 1}
        assert load_samples_npz(out / "samples" / f"{case}.npz").shape == (2, *in_props["shape"])
        for r in plans.raters:  # Stage II: one file per rater
            rs, pr = read_seg(out / "raters" / r / f"{case}{ending}")
            assert geometry_matches(pr, in_props) == [] and set(np.unique(rs)) <= {0, 1}

    summary = evaluate_folder(raw / "labelsTr", out)
    assert {"mode", "num_cases", "metrics", "metrics_std", "per_case", "raters", "num_classes"} <= set(summary)
    assert summary["num_cases"] == len(val) and summary["raters"] == plans.raters and summary["num_classes"] == 2
    assert (out / "summary.json").is_file() and (out / "summary_per_case.csv").is_file()
    m = summary["metrics"]
    assert 0.0 <= m["GED"] <= 2.0
    dice = {k: v for k, v in m.items() if k.startswith("Dice") and not math.isnan(v)}
    assert {"Dice_soft", "Dice_max", "Dice_match"} <= set(dice)
    assert all(0.0 <= v <= 1.0 for v in dice.values()), dice
    return summary
