"""Learning curves (evaluation/learning_curves.py, diffoseg_benchmark --learning_curves): points, compute seconds,
values against hand-computed GED, table and figure."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
from diffoseg_auto.evaluation.benchmark_entrypoint import main
from diffoseg_auto.evaluation.learning_curves import curve_points
from diffoseg_auto.io.image_io import write_image, write_seg
from diffoseg_auto.results_layout import learning_curve_folder, progress_checkpoint_name, stage_folder
from diffoseg_auto.utilities.file_ops import save_json

DS = "Dataset004_Curve"
PROPS = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0], "shape": [4, 4]}


def cols(*idx: int) -> np.ndarray:
    m = np.zeros((4, 4), np.uint8)
    m[:, list(idx)] = 1
    return m


RATERS = {"a": cols(0, 1), "b": cols(0)}  # one case, two raters


def ged(samples: list[np.ndarray], raters: list[np.ndarray]) -> float:
    def d(x, y):
        u = np.logical_or(x, y).sum()
        return 0.0 if u == 0 else 1 - np.logical_and(x, y).sum() / u
    mean_d = lambda A, B: np.mean([d(x, y) for x in A for y in B])  # noqa: E731
    return 2 * mean_d(samples, raters) - mean_d(samples, samples) - mean_d(raters, raters)


# method -> [(stage, fraction, epoch seconds in the checkpoint, samples)]
POINTS = {"FakeTrainer": [(1, 0.5, 10.0, [cols(), cols(3)]), (1, 1.0, 20.0, [cols(0), cols(1)]),
                          (2, 1.0, 5.0, [cols(0), cols(0, 1)])],
          "OtherTrainer": [(1, 1.0, 30.0, [cols(0), cols(0)])]}


def fake_checkpoint(path, epoch: int, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": {}, "init_args": {}, "epoch": epoch,
                "logging": {"epoch_start_timestamps": [0.0, 100.0], "epoch_end_timestamps": [seconds / 2, 100 + seconds / 2]}},
               path)


@pytest.fixture
def curve_data(env_folders):
    raw = env_folders["raw"] / DS
    write_dataset_json(raw, DatasetDescription(name="Curve", channel_names={0: "CT"},
                                               labels={"background": 0, "fg": 1}, raters=list(RATERS), num_training=1,
                                               file_ending=".nii.gz"))
    write_image(np.zeros((4, 4), np.float32), PROPS, raw / "imagesTr" / "c1_0000.nii.gz")
    for r, m in RATERS.items():
        write_seg(m, PROPS, raw / "labelsTr" / r / "c1.nii.gz")
    save_json([{"train": [], "val": ["c1"]}], env_folders["preprocessed"] / DS / "splits_final.json")
    for tr, points in POINTS.items():
        folder = env_folders["results"] / DS / f"{tr}__DiffOSegPlans__2d"
        for stage, f, secs, samples in points:
            name = progress_checkpoint_name(stage, f)
            fake_checkpoint(stage_folder(folder, 0, stage) / name, int(f * 8), secs)
            if (stage, f) == (1, 1.0):
                fake_checkpoint(stage_folder(folder, 0, 1) / "checkpoint_final.pth", 8, secs)
            out = learning_curve_folder(folder, 0, name) / "samples"
            out.mkdir(parents=True)
            np.savez(out / "c1.npz", samples=np.stack(samples))
    return env_folders


def test_points_count_stage1_compute_into_stage2(curve_data):
    folder = curve_data["results"] / DS / "FakeTrainer__DiffOSegPlans__2d"
    pts = curve_points(folder, 0)
    assert [(p["stage"], p["fraction"], p["seconds"]) for p in pts] == [(1, 0.5, 10.0), (1, 1.0, 20.0), (2, 1.0, 25.0)]
    assert pts[0]["checkpoint"] == "checkpoint_stage1_at_0.5.pth" and pts[0]["epoch"] == 4


def test_benchmark_learning_curves_table_and_figure(curve_data, tmp_path):
    out = tmp_path / "lc"
    main(["-d", DS, "-c", "2d", "-f", "0", "-tr", "FakeTrainer", "OtherTrainer", "-o", str(out), "--learning_curves"])
    table = pd.read_csv(out / "learning_curves.csv")
    raters = list(RATERS.values())
    for tr, points in POINTS.items():
        rows = table[table["method"] == tr.removesuffix("Trainer")].sort_values("seconds")
        assert len(rows) == len(points)
        for (_, r), (stage, f, secs, samples) in zip(rows.iterrows(), points):
            assert r["stage"] == stage and r["fraction"] == f
            assert r["GED"] == pytest.approx(ged(samples, raters), abs=1e-9)
            assert r["folds"] == 1
    assert table[table["method"] == "Fake"]["seconds"].tolist() == [10.0, 20.0, 25.0]
    assert (out / "learning_curves.png").stat().st_size > 1000
    assert "| Fake | 2 | 1 | 25 | 1 |" in (out / "learning_curves.md").read_text()
