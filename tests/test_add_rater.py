"""diffoseg_add_rater: a tiny model gains a working rater, the original checkpoint stays byte-identical, and each
bad input gets its one-line message with nothing written."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from diffoseg_auto.cli.console import run_command
from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
from diffoseg_auto.io.image_io import write_image, write_seg
from diffoseg_auto.plans.network_arguments import denoiser_from_plans
from diffoseg_auto.plans.plans import plans_from_dict
from diffoseg_auto.results_layout import ADDED_RATERS_CHECKPOINT, rater_list_file
from diffoseg_auto.training.add_rater import AddRaterRequest, add_rater, main
from diffoseg_auto.training.run_training import run_training
from diffoseg_auto.training.training_request import TrainingRequest
from diffoseg_auto.utilities.file_ops import load_json, save_json
from support.toy_training import DATASET

PROPS = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0], "shape": [32, 32]}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_new_cases(images, labels, n: int = 3, shape=(32, 32)) -> None:
    """A new expert who draws every square 2 voxels larger than rater 0."""
    rng = np.random.RandomState(5)
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        lo = 8 + i % 3
        img = (0.1 * rng.randn(*shape)).astype(np.float32)
        img[lo:lo + 10, lo:lo + 10] += 1
        m = np.zeros(shape, np.uint8)
        m[lo - 2:lo + 12, lo - 2:lo + 12] = 1
        write_image(img, PROPS, images / f"new_{i:03d}_0000.nii.gz")
        write_seg(m, PROPS, labels / f"new_{i:03d}.nii.gz")


@pytest.fixture
def trained(toy, tmp_path):
    run_training(TrainingRequest(DATASET, "2d", 0, stage="both", final_validation=False, num_workers=0))
    folder = toy["results"] / DATASET / "DiffOSegTrainer__DiffOSegPlans__2d"
    save_json({"file_ending": ".nii.gz", "raters": ["r0", "r1", "r2"]}, folder / "dataset.json")
    write_new_cases(tmp_path / "imgs", tmp_path / "masks")
    return {**toy, "folder": folder, "images": tmp_path / "imgs", "labels": tmp_path / "masks"}


def request(t, **kw) -> AddRaterRequest:
    return AddRaterRequest(**{"dataset": DATASET, "configuration": "2d", "fold": 0, "name": "newbie",
                              "images": t["images"], "labels": t["labels"], "iterations": 20, "device": "cpu", **kw})


@pytest.mark.slow
@pytest.mark.parametrize("block", ["residual", "paper"])
def test_tiny_model_gains_a_working_rater(toy, tmp_path, block):
    pp = toy["preprocessed"] / DATASET / "DiffOSegPlans.json"
    plans = load_json(pp)
    plans["configurations"]["2d"]["stage2"]["prompt_block"] = block
    save_json(plans, pp)
    run_training(TrainingRequest(DATASET, "2d", 0, stage="both", final_validation=False, num_workers=0))
    folder = toy["results"] / DATASET / "DiffOSegTrainer__DiffOSegPlans__2d"
    write_new_cases(tmp_path / "i", tmp_path / "m")
    original = folder / "fold_0" / "stage2" / "checkpoint_final.pth"
    before = sha(original)
    out = add_rater(AddRaterRequest(DATASET, "2d", 0, "newbie", tmp_path / "i", tmp_path / "m", iterations=20,
                                    device="cpu"))
    assert sha(original) == before  # the original is untouched and still loads
    assert out.name == ADDED_RATERS_CHECKPOINT
    listing = load_json(rater_list_file(folder, 0))
    assert listing["raters"] == ["r0", "r1", "r2", "newbie"] and listing["checkpoint"] == ADDED_RATERS_CHECKPOINT
    assert listing["added"][0]["cases"] == ["new_000", "new_001", "new_002"]
    old = torch.load(original, weights_only=False)["network_weights"]
    new_ck = torch.load(out, weights_only=False)
    new = new_ck["network_weights"]
    net = denoiser_from_plans(plans_from_dict(new_ck["plans"]), "2d", 2)
    net.load_state_dict(new)  # the extended model loads as a 4-rater network
    rows = net.per_rater_parameters()
    assert rows and net.num_raters == 4
    for name, v in old.items():  # every old weight and every old rater row is unchanged, bit for bit
        if name in rows:
            old_rows = new[name].narrow(rows[name], 0, 3)
            assert torch.equal(old_rows, v), name
        else:
            assert torch.equal(new[name], v), name
    # the new rows moved away from their start (the mean of the existing raters' rows)
    moved = [not torch.allclose(new[n].narrow(a, 3, 1), old[n].mean(dim=a, keepdim=True)) for n, a in rows.items()]
    assert any(moved)
    # prediction reads the rater list: the new expert by name, and within 'all'
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder

    write_dataset_json(toy["raw"] / DATASET, DatasetDescription(
        name="TrainToy", channel_names={0: "toy"}, labels={"background": 0, "lesion": 1}, raters=["r0", "r1", "r2"],
        num_training=0, file_ending=".nii.gz"))
    (folder / "dataset.json").write_text((toy["raw"] / DATASET / "dataset.json").read_text())
    for raters, expected in ((["newbie"], {"newbie"}), ("all", {"r0", "r1", "r2", "newbie"})):
        pred = tmp_path / f"pred_{len(expected)}"
        predict_from_folder(tmp_path / "i", pred, DATASET, "2d", [0], raters=raters, num_samples=2,
                            rater_num_samples=1, device="cpu", num_processes_preprocessing=1, num_processes_export=1)
        assert {d.name for d in (pred / "raters").iterdir()} == expected
        assert (pred / "raters" / "newbie" / "new_000.nii.gz").is_file()


@pytest.mark.slow
def test_every_bad_input_gets_one_line_and_writes_nothing(trained, capsys, tmp_path):
    folder, images, labels = trained["folder"], trained["images"], trained["labels"]

    def refused(argv: list[str], expect: str) -> None:
        assert run_command("diffoseg_add_rater", main, argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], err
        assert not (folder / "fold_0" / "stage2" / ADDED_RATERS_CHECKPOINT).exists()
        assert not rater_list_file(folder, 0).exists()

    base = ["-d", DATASET, "-c", "2d", "-f", "0", "--name", "newbie", "--iterations", "2", "-device", "cpu"]
    ok = base + ["-i", str(images), "-l", str(labels)]
    refused(ok[:-1] + [str(tmp_path / "nowhere")], "folder not found")
    empty_i, empty_l = tmp_path / "ei", tmp_path / "el"
    empty_i.mkdir(), empty_l.mkdir()
    refused(base + ["-i", str(empty_i), "-l", str(empty_l)], "no masks ending in .nii.gz")
    (labels / "new_000.nii.gz").rename(tmp_path / "kept.nii.gz")
    refused(ok, "new_000_0000.nii.gz: image without the new expert's mask")
    (tmp_path / "kept.nii.gz").rename(labels / "new_000.nii.gz")
    write_seg(np.zeros((32, 32), np.uint8), PROPS, labels / "orphan.nii.gz")
    refused(ok, "orphan.nii.gz: mask without its image")
    (labels / "orphan.nii.gz").unlink()
    write_seg(np.zeros((16, 32), np.uint8), {**PROPS, "shape": [16, 32]}, labels / "new_001.nii.gz")
    refused(ok, "new_001.nii.gz: label size [16, 32] differs from its image [32, 32]")
    write_seg(np.zeros((32, 32), np.uint8), {**PROPS, "spacing": [2.0, 2.0]}, labels / "new_001.nii.gz")
    refused(ok, "new_001.nii.gz: spacing differ(s) from its image")
    bad = np.zeros((32, 32), np.uint8)
    bad[0, 0] = 255
    write_seg(bad, PROPS, labels / "new_001.nii.gz")
    refused(ok, "label value(s) [255] outside dataset.json labels 0..1")
    write_new_cases(images, labels)
    refused([a if a != "newbie" else "r1" for a in ok], "already has a rater of that name")
    refused(ok + ["-tr", "ConsensusUNetTrainer"], "only DiffOSeg models take a new expert")
    (folder / "fold_0" / "stage2" / "checkpoint_final.pth").rename(tmp_path / "s2.pth")
    refused(ok, "no Stage II model in this fold")
