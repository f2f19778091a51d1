"""Issue 14: kill -9 at three points of preprocessing, training and prediction, then a rerun to completion
gives the same final outputs as an uninterrupted run. Real subprocesses, real SIGKILL."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dataset_conversion.generate_toy_dataset import generate_toy_dataset
from diffoseg_auto.evaluation.prediction_folder import load_samples_npz
from diffoseg_auto.paths import ENV_PREPROCESSED, ENV_RAW, ENV_RESULTS
from diffoseg_auto.preprocessing.case_storage import list_preprocessed_cases
from diffoseg_auto.utilities.file_ops import load_json
from planners.plan_and_preprocess_entrypoints import plan_and_preprocess
from support.pipeline import make_plans_tiny
from support.predictor_models import DATASET, tiny_plans, write_model_folder, write_raw_input

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300


def _env(raw: Path, preprocessed: Path, results: Path) -> dict:
    return {**os.environ, ENV_RAW: str(raw), ENV_PREPROCESSED: str(preprocessed), ENV_RESULTS: str(results),
            "PYTHONPATH": str(ROOT)}


def _run(args: list[str], env: dict) -> None:
    done = subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]


def _kill_when(args: list[str], env: dict, ready: Callable[[], bool]) -> None:
    """Start the command, SIGKILL it as soon as ``ready()`` holds; fail if it ended before that."""
    proc = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + TIMEOUT_S
    try:
        while not ready():
            assert proc.poll() is None, f"ended before the kill point: {proc.stderr.read()[-3000:]}"
            assert time.time() < deadline, "kill point never reached"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _kill_at_each_point_then_finish(first: list[str], resume: list[str], env: dict,
                                    points: dict[str, Callable[[], bool]], interrupted: Callable[[], bool]) -> None:
    """Run, kill -9 at the first point; resume, kill at the next point; ...; then resume to completion."""
    args = first
    for point, ready in points.items():
        _kill_when(args, env, ready)
        assert interrupted(), f"the kill at '{point}' came after the run had finished"
        args = resume
    _run(resume, env)


def _same(a, b, where: str = "") -> None:
    """Deep equality of nested dicts/lists/arrays (the properties pickles)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(map(str, a)) == sorted(map(str, b)), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


# ---------------------------------------------------------------- preprocessing

def _count(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.is_dir() else 0


def test_preprocessing_killed_at_three_points_then_finished(tmp_path, monkeypatch):
    raw_root = tmp_path / "raw"
    raw = generate_toy_dataset(raw_root / "Dataset946_KillPP", dim=2, num_cases=40, num_raters=2, seed=2)
    args = ["-m", "planners.plan_and_preprocess_entrypoints", "-d", "946", "-np", "1", "-c", "2d"]
    reference = tmp_path / "pp_reference"
    for env, value in ((ENV_RAW, raw_root), (ENV_PREPROCESSED, reference), (ENV_RESULTS, tmp_path / "results")):
        monkeypatch.setenv(env, str(value))
    reference.mkdir()
    plan_and_preprocess(args[2:])
    ref = reference / raw.name
    ref_cases = list_preprocessed_cases(ref / "DiffOSegPlans_2d")
    assert len(ref_cases) == 40

    points = {"fingerprint written": lambda d: (d / "dataset_fingerprint.json").is_file(),
              "first case written": lambda d: _count(d / "DiffOSegPlans_2d", "*.npz") >= 1,
              "half the cases written": lambda d: _count(d / "DiffOSegPlans_2d", "*.pkl") >= 20}
    root = tmp_path / "pp_killed"
    root.mkdir()
    out = root / raw.name
    _kill_at_each_point_then_finish(args, args, _env(raw_root, root, tmp_path / "results"),
                                    {p: (lambda r=ready: r(out)) for p, ready in points.items()},
                                    lambda: len(list_preprocessed_cases(out / "DiffOSegPlans_2d")) < 40)
    assert load_json(out / "DiffOSegPlans.json") == load_json(ref / "DiffOSegPlans.json")
    assert load_json(out / "dataset_fingerprint.json") == load_json(ref / "dataset_fingerprint.json")
    assert list_preprocessed_cases(out / "DiffOSegPlans_2d") == ref_cases
    assert [p.name for p in (out / "DiffOSegPlans_2d").glob(".*")] == []  # no temporaries, no lock
    for case in ref_cases:
        with np.load(out / "DiffOSegPlans_2d" / f"{case}.npz") as a, np.load(ref / "DiffOSegPlans_2d" / f"{case}.npz") as b:
            _same({k: a[k] for k in a}, {k: b[k] for k in b}, f"{case}.npz")
        _same(pickle.loads((out / "DiffOSegPlans_2d" / f"{case}.pkl").read_bytes()),
              pickle.loads((ref / "DiffOSegPlans_2d" / f"{case}.pkl").read_bytes()), f"{case}.pkl")


# ---------------------------------------------------------------- training

def test_training_killed_at_three_points_then_continued(tmp_path, monkeypatch):
    raw_root, pp = tmp_path / "raw", tmp_path / "preprocessed"
    raw = generate_toy_dataset(raw_root / "Dataset947_KillTr", dim=2, num_cases=6, num_raters=2, image_size=32, seed=3)
    for env, value in ((ENV_RAW, raw_root), (ENV_PREPROCESSED, pp), (ENV_RESULTS, tmp_path / "unused")):
        monkeypatch.setenv(env, str(value))
    pp.mkdir()
    plan_and_preprocess(["-d", "947", "-np", "1", "-c", "2d"])
    make_plans_tiny(pp / raw.name / "DiffOSegPlans.json", [32, 32], 0.5)
    args = ["-m", "diffoseg_auto.training.run_training", "947", "2d", "0", "--num_epochs", "7",
            "--iterations_per_epoch", "2", "--val_iterations", "1", "-device", "cpu", "--num_workers", "0"]
    trainer = Path(raw.name) / "DiffOSegTrainer__DiffOSegPlans__2d" / "fold_0"
    # the uninterrupted reference runs as the killed runs do (a fresh process, the same environment): in the test
    # process, state earlier tests left (e.g. torch's thread count) would change the float results, not the resume
    _run(args, _env(raw_root, pp, tmp_path / "results_reference"))
    ref = tmp_path / "results_reference" / trainer

    points = {"stage 1 started": lambda f: (f / "stage1" / "debug.json").is_file(),
              "stage 1 epoch 5 saved": lambda f: (f / "stage1" / "checkpoint_latest.pth").is_file(),
              "stage 2 started": lambda f: (f / "stage2" / "debug.json").is_file()}
    fold = tmp_path / "results_killed" / trainer
    # each resume (--c) takes over the dead run's stale lock
    _kill_at_each_point_then_finish(args, args + ["--c"], _env(raw_root, pp, tmp_path / "results_killed"),
                                    {p: (lambda r=ready: r(fold)) for p, ready in points.items()},
                                    lambda: not (fold / "stage2" / "checkpoint_final.pth").exists())
    for name in ("stage1/checkpoint_final.pth", "stage2/checkpoint_final.pth", "checkpoint_final.pth"):
        a = torch.load(fold / name, weights_only=False)
        b = torch.load(ref / name, weights_only=False)
        assert a["epoch"] == b["epoch"] == 7, name
        for k, v in b["network_weights"].items():
            torch.testing.assert_close(a["network_weights"][k], v, rtol=0, atol=1e-6, msg=f"{name} {k}")
    for stage in ("stage1", "stage2"):
        sa = load_json(fold / stage / "validation" / "summary.json")["metrics"]
        sb = load_json(ref / stage / "validation" / "summary.json")["metrics"]
        assert sa.keys() == sb.keys() and all(np.isclose(sa[k], sb[k], equal_nan=True) for k in sa), stage
    assert not list(fold.rglob(".tmp_*")) and not (fold / ".diffoseg_run.lock").exists()


# ---------------------------------------------------------------- prediction

def _images(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted(folder.rglob("*.nii.gz")):
        out[str(f.relative_to(folder))] = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
    for f in sorted(folder.rglob("*.npz")):
        out[str(f.relative_to(folder))] = load_samples_npz(f)
    return out


def test_prediction_killed_at_three_points_then_continued(env_folders, tmp_path):
    from diffoseg_auto.inference.predict_entrypoint import predict_from_folder

    write_model_folder(env_folders["results"], tiny_plans())
    write_raw_input(tmp_path / "input", n_cases=8)
    env = _env(env_folders["raw"], env_folders["preprocessed"], env_folders["results"])

    def args(out: Path) -> list[str]:
        return ["-m", "diffoseg_auto.inference.predict_entrypoint", "-i", str(tmp_path / "input"), "-o", str(out),
                "-d", DATASET, "-c", "2d", "-f", "0", "-device", "cpu", "--num_samples", "2", "--sampling_steps", "2",
                "-npp", "1", "-nps", "1", "--save_samples"]

    predict_from_folder(tmp_path / "input", tmp_path / "reference", DATASET, "2d", [0], num_samples=2, sampling_steps=2,
                        device="cpu", num_processes_preprocessing=1, num_processes_export=1, save_samples=True)
    ref = _images(tmp_path / "reference")
    assert len(ref) == 8 * 5  # consensus, uncertainty, two raters, samples

    points = {"settings written": lambda o: (o / "prediction_settings.json").is_file(),
              "first case written": lambda o: _count(o / "consensus", "*.nii.gz") >= 1,
              "half the cases written": lambda o: _count(o / "samples", "*.npz") >= 4}
    out = tmp_path / "out_killed"
    _kill_at_each_point_then_finish(args(out), args(out) + ["--continue_prediction"], env,
                                    {p: (lambda r=ready: r(out)) for p, ready in points.items()},
                                    lambda: _count(out / "samples", "*.npz") < 8)
    got = _images(out)
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    assert not list(out.rglob(".tmp_*")) and not (out / ".diffoseg_run.lock").exists()


# ---------------------------------------------------------------- diffoseg_add_rater

def test_add_rater_killed_while_fitting_then_run_again(toy, tmp_path):
    """kill -9 once the new expert's cases are preprocessed (fitting starts); the same command again finishes:
    the extended model and the fold's rater list are written, the original Stage II model is untouched, and no
    temporary file is left in the model folder."""
    import hashlib

    from diffoseg_auto.dataset.raw_dataset import DatasetDescription, write_dataset_json
    from diffoseg_auto.inference.model_loading import trained_network
    from diffoseg_auto.io.checkpoint_io import save_checkpoint
    from diffoseg_auto.io.image_io import write_image, write_seg
    from support.toy_training import DATASET as TOY, tiny_plans as toy_plans

    plans = toy_plans()
    folder = toy["results"] / TOY / "DiffOSegTrainer__DiffOSegPlans__2d"
    write_dataset_json(folder, DatasetDescription(name="TrainToy", channel_names={0: "toy"},
                                                  labels={"background": 0, "lesion": 1}, raters=plans.raters,
                                                  num_training=4, file_ending=".nii.gz"))
    torch.manual_seed(0)
    init_args = {"trainer_name": "DiffOSegTrainer", "plans_name": "DiffOSegPlans", "configuration": "2d",
                 "dataset_name": TOY, "stage": 2, "fold": 0, "num_raters": 3, "num_classes": 2}
    original = folder / "fold_0" / "stage2" / "checkpoint_final.pth"
    save_checkpoint(original, {"network_weights": trained_network("DiffOSegTrainer", plans, "2d", 2).state_dict(),
                               "init_args": init_args, "plans": plans.to_dict(), "trainer_name": "DiffOSegTrainer"})
    before = hashlib.sha256(original.read_bytes()).hexdigest()
    props = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0], "shape": [32, 32]}
    for i in range(2):
        img = np.zeros((32, 32), np.float32)
        img[8 + i:18 + i, 8:18] = 1
        write_image(img, props, tmp_path / "imgs" / f"new_{i}_0000.nii.gz")
        write_seg((img > 0).astype(np.uint8), props, tmp_path / "masks" / f"new_{i}.nii.gz")
    scratch = tmp_path / "tmp"  # the command's temporary folder (TMPDIR) holds its preprocessed cases
    scratch.mkdir()
    env = {**_env(toy["raw"], toy["preprocessed"], toy["results"]), "TMPDIR": str(scratch)}
    args = ["-m", "diffoseg_auto.training.add_rater", "-d", TOY, "-c", "2d", "-f", "0", "--name", "reader9",
            "-i", str(tmp_path / "imgs"), "-l", str(tmp_path / "masks"), "--iterations", "400", "-device", "cpu"]
    added = folder / "fold_0" / "stage2" / "checkpoint_added_raters.pth"
    _kill_when(args, env, lambda: any(scratch.glob("diffoseg_add_rater_*/*.npz")))
    assert not added.exists() and not (folder / "fold_0" / "raters.json").exists()
    _run([*args[:-4], "--iterations", "5", "-device", "cpu"], env)
    assert load_json(folder / "fold_0" / "raters.json")["raters"] == ["r0", "r1", "r2", "reader9"]
    assert added.is_file() and hashlib.sha256(original.read_bytes()).hexdigest() == before
    assert not [p for p in folder.rglob(".tmp_*")]
