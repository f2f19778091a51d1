"""Issue 14: nothing lost, nothing silently wrong. One test per item: the message, and that nothing the
user made was lost (raw files, other checkpoints, files beside the outputs)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dataset_conversion.generate_toy_dataset import generate_toy_dataset
from diffoseg_auto.dataset.label_checks import LabelFileError
from diffoseg_auto.io.image_checks import CorruptImageError, NonFiniteImageError
from diffoseg_auto.io.image_io import read_images
from diffoseg_auto.preprocessing.case_storage import list_preprocessed_cases, save_case
from diffoseg_auto.preprocessing.resume import IncompletePreprocessingError
from diffoseg_auto.training.finite_guard import NonFiniteTrainingError
from diffoseg_auto.training.fold_guard import FoldAlreadyTrainedError
from diffoseg_auto.training.run_training import run_training
from diffoseg_auto.training.training_request import ScheduleOverrides, TrainingRequest
from diffoseg_auto.utilities.argument_checks import ArgumentError
from diffoseg_auto.utilities.run_lock import LOCK_NAME, RunLock, RunLockedError
from diffoseg_auto.cli import console
from planners.plan_and_preprocess_entrypoints import plan_and_preprocess
from support.predictor_models import predict, tiny_plans, write_model_folder, write_raw_input
from support.toy_training import DATASET, make_toy_cases

ROOT = Path(__file__).resolve().parents[1]


def _toy_raw(env: dict, dataset_id: int, num_cases: int = 6) -> Path:
    return generate_toy_dataset(env["raw"] / f"Dataset{dataset_id:03d}_Robust", dim=2, num_cases=num_cases,
                                num_raters=2, image_size=16, seed=1)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _console_error(command: str, args: list[str], monkeypatch, capsys) -> str:
    """Run the installed console script ``command`` (through diffoseg_auto.cli.console); assert exit 1 and one
    error line, the last on stderr (logging INFO lines may precede it), without a traceback; return that line."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", [command, *args])
    with pytest.raises(SystemExit) as e:
        getattr(console, command)()
    assert e.value.code == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert "Traceback" not in err and len(errors) == 1 and err.rstrip("\n").splitlines()[-1] == errors[0], err
    assert errors[0].startswith(f"{command}: error: "), errors[0]
    return errors[0].removeprefix(f"{command}: error: ")


def _stage1(env: dict) -> Path:
    return env["results"] / DATASET / "DiffOSegTrainer__DiffOSegPlans__2d" / "fold_0" / "stage1"


# ---------------------------------------------------------------- 1. non-finite values

def _as_mha(raw: Path) -> None:
    """Convert a raw dataset to .mha (SimpleITK reads NaN/Inf of NIfTI files as 0; .mha keeps them)."""
    for f in sorted(raw.rglob("*.nii.gz")):
        sitk.WriteImage(sitk.ReadImage(str(f)), str(f.with_name(f.name[: -len(".nii.gz")] + ".mha")), True)
        f.unlink()
    dj = json.loads((raw / "dataset.json").read_text())
    (raw / "dataset.json").write_text(json.dumps({**dj, "file_ending": ".mha"}))


def test_nan_image_rejected_by_name_without_verification(env_folders, monkeypatch, capsys):
    raw = _toy_raw(env_folders, 941)
    _as_mha(raw)
    bad = raw / "imagesTr" / "toy_002_0000.mha"
    img = sitk.ReadImage(str(bad), sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(img)
    arr[3, 4], arr[5, 5] = np.nan, np.inf
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(bad), True)
    with pytest.raises(NonFiniteImageError, match=r"toy_002_0000\.mha: contains 2 NaN/Inf value\(s\)"):
        plan_and_preprocess(["-d", "941", "-np", "1", "-c", "2d"])
    # the console script: one line, exit 1
    error = _console_error("diffoseg_plan_and_preprocess", ["-d", "941", "-np", "1", "-c", "2d"], monkeypatch, capsys)
    assert "toy_002_0000.mha: contains 2 NaN/Inf" in error
    assert not (env_folders["preprocessed"] / raw.name / "dataset_fingerprint.json").exists()  # no Infinity stored
    assert bad.is_file()


def test_non_finite_loss_stops_training_and_keeps_last_good_checkpoint(toy, tmp_path):
    run_training(TrainingRequest(DATASET, "2d", 0, stage="1", schedule=ScheduleOverrides(num_epochs=1),
                                 final_validation=False, num_workers=0, output_folder=tmp_path))
    stage1 = tmp_path / "fold_0" / "stage1"
    kept = {n: (stage1 / n).read_bytes() for n in ("checkpoint_latest.pth", "checkpoint_final.pth", "checkpoint_best.pth")}
    folder = toy["preprocessed"] / DATASET / "DiffOSegPlans_2d"
    for case in list_preprocessed_cases(folder):  # the data turns to NaN after the first epoch
        with np.load(folder / f"{case}.npz") as z:
            save_case(folder, case, z["data"] * np.nan, z["seg"], z["rater_mask"], {"class_locations": {1: np.zeros((0, 2))}})
    with pytest.raises(NonFiniteTrainingError, match=r"stage 1, fold 0: non-finite training loss nan at epoch 1; "
                                                     r"training stopped before the weights changed"):
        run_training(TrainingRequest(DATASET, "2d", 0, stage="1", schedule=ScheduleOverrides(num_epochs=3),
                                     final_validation=False, num_workers=0, output_folder=tmp_path,
                                     continue_training=True))
    for name, data in kept.items():
        assert (stage1 / name).read_bytes() == data, name
    ck = torch.load(stage1 / "checkpoint_latest.pth", weights_only=False)
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["network_weights"].values() if v.is_floating_point())


# ---------------------------------------------------------------- 2. preprocessing resumable and complete

def test_interrupted_preprocessing_is_refused_by_training_and_finished_by_a_rerun(env_folders):
    raw = _toy_raw(env_folders, 942)
    plan_and_preprocess(["-d", "942", "-np", "1", "-c", "2d"])
    folder = env_folders["preprocessed"] / raw.name / "DiffOSegPlans_2d"
    cases = list_preprocessed_cases(folder)
    assert len(cases) == 6
    # what a kill -9 leaves: a case without its .pkl, a missing case, 0-byte temporaries (old and new naming)
    (folder / "toy_001.pkl").unlink()
    (folder / "toy_004.npz").unlink()
    (folder / "toy_004.pkl").unlink()
    (folder / ".tmp_0123abcd_toy_004.npz").write_bytes(b"")
    (folder / ".tmp_4567ef_toy_004.npz.part").write_bytes(b"")
    assert list_preprocessed_cases(folder) == [c for c in cases if c not in ("toy_001", "toy_004")]
    untouched = {c: (folder / f"{c}.npz").stat().st_mtime_ns for c in ("toy_000", "toy_002")}

    with pytest.raises(IncompletePreprocessingError, match=r"2 of 6 case\(s\) are not preprocessed: toy_001, toy_004\. "
                                                          r"Run `diffoseg_preprocess -d Dataset942_Robust -c 2d`"):
        run_training(TrainingRequest(942, "2d", 0, stage="1",
                                     schedule=ScheduleOverrides(num_epochs=1, iterations_per_epoch=1), num_workers=0))
    assert not (env_folders["preprocessed"] / raw.name / "splits_final.json").exists()  # no folds from 4 cases

    plan_and_preprocess(["-d", "942", "-np", "1", "-c", "2d"])  # re-running planning finishes the missing cases only
    assert list_preprocessed_cases(folder) == cases
    assert not list(folder.glob(".tmp_*"))
    assert {c: (folder / f"{c}.npz").stat().st_mtime_ns for c in untouched} == untouched
    assert len(list((raw / "imagesTr").iterdir())) == 6  # raw data untouched


# ---------------------------------------------------------------- 3. one run per fold output

def test_second_run_refused_and_stale_lock_taken_over(toy, tmp_path, caplog):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fold = tmp_path / "fold_0"
        fold.mkdir(parents=True)
        (fold / LOCK_NAME).write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(), "started": "now",
                                                  "command": "diffoseg_train other"}))
        with pytest.raises(RunLockedError, match=rf"fold_0: in use by PID {live.pid} since now \(diffoseg_train other\)"):
            run_training(TrainingRequest(DATASET, "2d", 0, stage="1", final_validation=False, num_workers=0,
                                         output_folder=tmp_path))
        assert sorted(p.name for p in fold.iterdir()) == [LOCK_NAME]  # the other run's folder was not touched
    finally:
        live.kill()
        live.wait()
    (fold / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    run_training(TrainingRequest(DATASET, "2d", 0, stage="1", final_validation=False, num_workers=0,
                                 output_folder=tmp_path))
    assert any("taking over the stale lock" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert (fold / "stage1" / "checkpoint_final.pth").is_file() and not (fold / LOCK_NAME).exists()
    with RunLock(fold, "a"), pytest.raises(RunLockedError, match=f"in use by PID {os.getpid()}"):
        RunLock(fold, "b").acquire()  # the same process counts as a live owner too
    # a live PID whose start time differs is a reused PID: the lock is stale
    (fold / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "start_time": "0"}))
    with RunLock(fold, "c") as lock:
        assert json.loads(lock.path.read_text())["command"].startswith("c")


# ---------------------------------------------------------------- 4. workers die with their parent

_WORKER_SCRIPT = """
import os, sys, time
import numpy as np
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase
from batchgenerators.transforms.abstract_transforms import Compose
from diffoseg_auto.training.augmentation import make_augmenter

class Loader(SlimDataLoaderBase):
    def generate_train_batch(self):
        return {"data": np.zeros((1, 1, 4, 4), np.float32)}

aug = make_augmenter(Loader(None, 1), Compose([]), 2, seed=0)
next(aug)
print(os.getpid(), flush=True)
time.sleep(120)
"""


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError):
                pass
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the workers")
def test_augmentation_workers_die_with_their_parent():
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-c", _WORKER_SCRIPT], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert int(proc.stdout.readline()) == proc.pid
        workers = _children(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(Path(f"/proc/{w}").exists() and
                                             (Path(f"/proc/{w}/stat").read_text().split()[2] != "Z") for w in workers):
            time.sleep(0.2)
        alive = [w for w in workers if Path(f"/proc/{w}").exists() and Path(f"/proc/{w}/stat").read_text().split()[2] != "Z"]
        assert alive == [], f"orphaned workers {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- 5. no silent overwrite

def test_retraining_a_finished_fold_needs_c_or_overwrite(toy, tmp_path):
    run_training(TrainingRequest(DATASET, "2d", 0, stage="both", final_validation=False, num_workers=0,
                                 output_folder=tmp_path))
    fold = tmp_path / "fold_0"
    before = {p: p.read_bytes() for p in fold.rglob("*.pth")}
    with pytest.raises(FoldAlreadyTrainedError, match=r"stage1: stage 1 of fold_0 was already finished \(checkpoint_final"
                                                      r".pth, .*\)\. Continue it with --c, or start over with --overwrite"):
        run_training(TrainingRequest(DATASET, "2d", 0, stage="1", num_workers=0, output_folder=tmp_path))
    assert {p: p.read_bytes() for p in fold.rglob("*.pth")} == before
    (fold / "notes.txt").write_text("mine")
    # retraining Stage II alone keeps Stage I and replaces Stage II and the fold's final copy
    run_training(TrainingRequest(DATASET, "2d", 0, stage="2", final_validation=False, num_workers=0,
                                 output_folder=tmp_path, overwrite=True, seed=7))
    assert (fold / "stage1" / "checkpoint_final.pth").read_bytes() == before[fold / "stage1" / "checkpoint_final.pth"]
    assert (fold / "stage2" / "checkpoint_final.pth").read_bytes() != before[fold / "stage2" / "checkpoint_final.pth"]
    assert (fold / "notes.txt").is_file()
    # retraining Stage I clears every derived file of the fold: Stage II no longer matches it
    run_training(TrainingRequest(DATASET, "2d", 0, stage="1", final_validation=False, num_workers=0,
                                 output_folder=tmp_path, overwrite=True))
    assert not (fold / "stage2").exists() and (fold / "notes.txt").read_text() == "mine"
    assert torch.load(fold / "checkpoint_final.pth", weights_only=False)["init_args"]["stage"] == 1


# ---------------------------------------------------------------- 6. truncated compressed images

def test_truncated_nii_gz_rejected_by_name(env_folders):
    from diffoseg_auto.dataset.integrity import verify_dataset_integrity

    raw = _toy_raw(env_folders, 943, num_cases=4)
    f = raw / "imagesTr" / "toy_001_0000.nii.gz"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CorruptImageError, match=r"toy_001_0000\.nii\.gz: cannot read this file, its compressed stream "
                                                r"is truncated or corrupt"):
        read_images([f])
    assert any("toy_001_0000.nii.gz: cannot read this file" in p for p in verify_dataset_integrity(raw))
    with pytest.raises(CorruptImageError, match="toy_001_0000.nii.gz"):
        plan_and_preprocess(["-d", "943", "-np", "1", "-c", "2d"])


# ---------------------------------------------------------------- 7. prediction finishes what it can

@pytest.mark.slow
def test_prediction_skips_bad_case_continues_and_overwrites(env_folders, tmp_path):
    from diffoseg_auto.inference.prediction_outputs import OutputFolderInUseError, PredictionIncompleteError

    write_model_folder(env_folders["results"], tiny_plans())
    write_raw_input(tmp_path / "input", n_cases=3)
    good = (tmp_path / "input" / "case1_0000.nii.gz").read_bytes()
    (tmp_path / "input" / "case1_0000.nii.gz").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    with pytest.raises(PredictionIncompleteError) as e:
        predict(env_folders, tmp_path, raters="none")
    lines = str(e.value).splitlines()
    assert lines[0].startswith("1 of 3 case(s) failed") and "--continue_prediction" in lines[0]
    assert len(lines) == 2 and lines[1].startswith("  case1: ") and "truncated or corrupt" in lines[1]
    assert sorted(p.name for p in (out / "consensus").iterdir()) == ["case0.nii.gz", "case2.nii.gz"]

    (tmp_path / "input" / "case1_0000.nii.gz").write_bytes(good)  # the user fixes the input
    done = (out / "consensus" / "case0.nii.gz").stat().st_mtime_ns
    with pytest.raises(OutputFolderInUseError, match=r"out: holds files of an earlier prediction .*--continue_prediction"):
        predict(env_folders, tmp_path, raters="none")
    assert predict(env_folders, tmp_path, raters="none", continue_prediction=True) == ["case0", "case1", "case2"]
    assert (out / "consensus" / "case1.nii.gz").is_file()
    assert (out / "consensus" / "case0.nii.gz").stat().st_mtime_ns == done  # finished case skipped
    with pytest.raises(OutputFolderInUseError, match=r"num_samples: 3 -> 2"):
        predict(env_folders, tmp_path, raters="none", continue_prediction=True, num_samples=2)

    (out / "my_notes.txt").write_text("mine")
    predict(env_folders, tmp_path, raters=["r1"], overwrite=True, num_processes_preprocessing=2)
    assert sorted(p.name for p in (out / "raters").iterdir()) == ["r1"]
    assert json.loads((out / "prediction_settings.json").read_text())["raters"] == ["r1"]
    assert (out / "my_notes.txt").read_text() == "mine" and not (out / LOCK_NAME).exists()


# ---------------------------------------------------------------- 8. arguments, labels, plans

def test_training_arguments_checked_up_front(toy, tmp_path, monkeypatch, capsys):
    with pytest.raises(ArgumentError) as e:
        run_training(TrainingRequest(DATASET, "2d", 0, stage="1",
                                     schedule=ScheduleOverrides(num_epochs=0, iterations_per_epoch=-3),
                                     output_folder=tmp_path / "x", continue_training=True, overwrite=True))
    assert str(e.value).splitlines() == ["--num_epochs must be >= 1, got 0.", "--iterations_per_epoch must be >= 1, got -3.",
                                         "--overwrite and --c exclude each other: continue the run or start it over."]
    assert not (tmp_path / "x").exists()
    if not torch.cuda.is_available():
        assert _console_error("diffoseg_train", [DATASET, "2d", "0", "-device", "cuda"], monkeypatch, capsys) == \
            "-device cuda: no CUDA GPU is visible on this machine. Use -device cpu."


def test_prediction_arguments_checked_before_the_output_folder(env_folders, tmp_path, monkeypatch, capsys):
    from diffoseg_auto.inference.prediction_request import PredictionError

    write_model_folder(env_folders["results"], tiny_plans(), stages=(1,))
    write_raw_input(tmp_path / "input", n_cases=1)
    with pytest.raises(ArgumentError) as e:
        predict(env_folders, tmp_path, num_samples=0, sampling_steps=-2)
    assert str(e.value).splitlines() == ["--num_samples must be >= 1, got 0.", "--sampling_steps must be >= 1, got -2."]
    assert _console_error("diffoseg_predict", ["-i", str(tmp_path / "input"), "-o", str(tmp_path / "out"), "-d", "901",
                                               "-c", "2d", "-f", "0", "-device", "cpu", "--num_samples", "-1"],
                          monkeypatch, capsys) == "--num_samples must be >= 1, got -1."
    assert not (tmp_path / "out").exists()
    extra = tmp_path / "input" / "case0_0001.nii.gz"
    extra.write_bytes((tmp_path / "input" / "case0_0000.nii.gz").read_bytes())
    with pytest.raises(PredictionError, match=r"case0_0001\.nii\.gz: channel beyond the 1 channel\(s\) this model takes"):
        predict(env_folders, tmp_path, raters="none")
    assert not (tmp_path / "out").exists() and extra.is_file()


def test_bad_raters_field_and_labels_rejected_at_planning(env_folders):
    raw = _toy_raw(env_folders, 944, num_cases=4)
    dj = json.loads((raw / "dataset.json").read_text())
    (raw / "dataset.json").write_text(json.dumps({**dj, "raters": "rater0"}))
    with pytest.raises(LabelFileError, match=r"dataset\.json: 'raters' must be a non-empty list .* got 'rater0'"):
        plan_and_preprocess(["-d", "944", "-np", "1", "-c", "2d"])
    (raw / "dataset.json").write_text(json.dumps(dj))

    label = raw / "labelsTr" / dj["raters"][0] / "toy_002.nii.gz"
    original = label.read_bytes()
    img = sitk.ReadImage(str(label))
    scaled = sitk.GetImageFromArray(sitk.GetArrayFromImage(img).astype(np.uint8) * 255)
    scaled.CopyInformation(img)
    sitk.WriteImage(scaled, str(label), True)
    with pytest.raises(LabelFileError, match=r"toy_002\.nii\.gz: label value\(s\) \[255\] outside dataset\.json labels "
                                             r"0\.\.1\. Masks saved as 0/255\? Divide them by 255\."):
        plan_and_preprocess(["-d", "944", "-np", "1", "-c", "2d"])
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 16), np.uint8)), str(label), True)
    with pytest.raises(LabelFileError, match=r"toy_002\.nii\.gz: label size \[8, 16\] differs from its image \[16, 16\]"):
        plan_and_preprocess(["-d", "944", "-np", "1", "-c", "2d", "--clean"])
    label.write_bytes(original)
    plan_and_preprocess(["-d", "944", "-np", "1", "-c", "2d", "--clean"])


def test_replanning_backs_up_a_hand_edited_plans_file(env_folders, caplog):
    raw = _toy_raw(env_folders, 945, num_cases=4)
    plan_and_preprocess(["-d", "945", "-np", "1", "-c", "2d", "--no_pp"])
    plans_file = env_folders["preprocessed"] / raw.name / "DiffOSegPlans.json"
    plan_and_preprocess(["-d", "945", "-np", "1", "-c", "2d", "--no_pp"])  # unchanged: no backup, no warning
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    edited = json.loads(plans_file.read_text())
    edited["configurations"]["2d"]["batch_size"] = 1
    plans_file.write_text(json.dumps(edited, indent=2))
    plan_and_preprocess(["-d", "945", "-np", "1", "-c", "2d", "--no_pp"])
    backups = list(plans_file.parent.glob("DiffOSegPlans.json.*.bak"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == edited
    assert any(f"{plans_file} differs from the new plans (edited by hand?)" in r.getMessage()
               and r.levelno == logging.WARNING for r in caplog.records)


# ---------------------------------------------------------------- 10. leftovers

def test_leftover_temporary_checkpoints_are_removed(toy, tmp_path):
    run_training(TrainingRequest(DATASET, "2d", 0, stage="1", final_validation=False, num_workers=0,
                                 output_folder=tmp_path))
    stage1 = tmp_path / "fold_0" / "stage1"
    leftovers = [stage1 / ".tmp_0a1b2c_checkpoint_best.pth", stage1 / ".tmp_9f8e_checkpoint_latest.pth.part",
                 tmp_path / "fold_0" / ".tmp_checkpoint_final.pth"]
    for p in leftovers:
        p.write_bytes(b"x" * 1000)
    run_training(TrainingRequest(DATASET, "2d", 0, stage="1", final_validation=False, num_workers=0,
                                 output_folder=tmp_path, continue_training=True))
    assert not any(p.exists() for p in leftovers)
    assert (stage1 / "checkpoint_final.pth").is_file()


def test_atomic_write_temporaries_are_invisible_to_readers(tmp_path):
    from diffoseg_auto.utilities.file_ops import atomic_write

    seen = []
    atomic_write(tmp_path / "case.npz", lambda p: seen.append((p.name, sorted(q.name for q in tmp_path.glob("*.npz")))) or
                 p.write_bytes(b"1"))
    assert seen[0][0].startswith(".tmp_") and seen[0][0].endswith(".part") and seen[0][1] == []
    make_toy_cases(tmp_path / "pp", n=1)
    (tmp_path / "pp" / ".tmp_x_case_009.npz").write_bytes(b"")
    assert list_preprocessed_cases(tmp_path / "pp") == ["case_000"]


# ---------------------------------------------------------------- 11. every file a command reads (issue 33)

from support import corruption_table as table  # noqa: E402  (the table's rows and the state they run on)


@pytest.fixture(scope="module")
def corruption_state(tmp_path_factory):
    """One small pipeline state (raw data to validation summary); each row runs on a copy of it."""
    root = tmp_path_factory.mktemp("corruption_state")
    with pytest.MonkeyPatch.context() as mp:
        table.build_state(root, mp)
    return root


def _snapshot(root: Path) -> dict[str, str]:
    """Every file's content hash; the unpacked .npy caches of preprocessed cases (rewritten from their .npz on
    every training start) are left out."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".npy")}


@pytest.mark.parametrize("row", table.ROWS, ids=lambda r: f"{r.command}:{r.file}:{r.corruption}")
def test_every_file_a_command_reads_fails_in_one_line(row, corruption_state, tmp_path, monkeypatch, capsys):
    """command x file x corruption -> exit 1, one line naming the file and the fix, no traceback, nothing else
    on disk changed (documentation/robustness.md, rendered from these rows)."""
    from diffoseg_auto.utilities.command_runner import run_command

    root = tmp_path / "state"
    shutil.copytree(corruption_state, root, symlinks=True)
    for key, value in table._environment(root).items():
        monkeypatch.setenv(key, value)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # real_data.py sets them by default
        monkeypatch.setenv(key, os.environ.get(key, "1"))
    table.prepare(row, root)
    table.corrupt(row.file, root / table.FILES[row.file], row.corruption)
    before = _snapshot(root)
    command = row.command.split()[0]
    capsys.readouterr()
    threads = torch.get_num_threads()  # the benchmark tool takes one thread
    try:
        code = run_command(command, table.main_of(row.command), table.argv(row, root))
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith(f"{command}: error: ")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err, err
    assert row.expect in errors[0], errors[0]
    assert _snapshot(root) == before


def test_robustness_md_holds_the_table_of_the_test():
    doc = (ROOT / "documentation" / "robustness.md").read_text()
    begin, end = "<!-- begin CORRUPTION_TABLE -->\n", "\n<!-- end CORRUPTION_TABLE -->"
    assert begin in doc and end in doc, "robustness.md lacks the CORRUPTION_TABLE markers"
    assert doc.split(begin, 1)[1].split(end, 1)[0] == table.render_markdown(), (
        "documentation/robustness.md is stale: put the output of `python tests/support/corruption_table.py` "
        "between its CORRUPTION_TABLE markers")


# ---------------------------------------------------------------- 12. a full disk (issue 33)

def _run(command: str, args: list[str], capsys) -> tuple[int, str]:
    from diffoseg_auto.cli.console import command_targets, load_main
    from diffoseg_auto.utilities.command_runner import run_command

    capsys.readouterr()
    code = run_command(command, load_main(command_targets()[command]), args)
    return code, capsys.readouterr().err


def _enospc_after_half(write):
    """A write primitive that writes half of what it is given, then finds the disk full."""
    import errno

    def full(target, payload, *a, **k):
        write(target, payload[: len(payload) // 2], *a, **k)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return full


def _state_copy(corruption_state: Path, tmp_path: Path, monkeypatch) -> Path:
    root = tmp_path / "state"
    shutil.copytree(corruption_state, root, symlinks=True)
    for key, value in table._environment(root).items():
        monkeypatch.setenv(key, value)
    return root


def _disk_full_target(command: str, code: int, err: str, ending: str) -> Path:
    """The file that ``command``'s one disk-full line names (exit 1, no traceback, the line ends the output)."""
    assert code == 1 and "Traceback" not in err, err
    prefix = f"{command}: error: no space left on device while writing "
    suffix = "; free space and run the same command again"
    line = err.splitlines()[-1]
    assert line.startswith(prefix) and line.endswith(ending + suffix), line
    return Path(line[len(prefix):-len(suffix)])


def test_disk_full_is_one_line_leaves_no_half_file_and_the_rerun_finishes(corruption_state, tmp_path, monkeypatch,
                                                                          capsys):
    root = _state_copy(corruption_state, tmp_path, monkeypatch)
    args = table.argv(table.Row("diffoseg_evaluate", "", "", ""), root)
    with monkeypatch.context() as m:  # the summary's text hits a full disk halfway
        m.setattr(Path, "write_text", _enospc_after_half(Path.write_text))
        code, err = _run("diffoseg_evaluate", args, capsys)
    summary = root / "pred" / "summary.json"
    assert code == 1 and "Traceback" not in err
    assert err.splitlines()[-1] == (f"diffoseg_evaluate: error: no space left on device while writing {summary}; "
                                    "free space and run the same command again")
    assert not summary.exists() and not list((root / "pred").glob(".tmp_*"))
    assert _run("diffoseg_evaluate", args, capsys)[0] == 0 and json.loads(summary.read_text())["num_cases"] == 1

    # preprocessing: a case's .npz hits a full disk halfway; the rerun preprocesses the missing case only
    folder = root / "preprocessed" / table.DS / "DiffOSegPlans_2d"
    for suffix in (".npz", ".pkl"):
        (folder / f"{table.CASE}{suffix}").unlink()
    kept = {p.name: p.read_bytes() for p in folder.glob("*.npz")}
    real_savez = np.savez_compressed
    with monkeypatch.context() as m:
        def full_savez(fh, **arrays):
            fh.write(b"PK\x03\x04 half a case")
            raise OSError(__import__("errno").ENOSPC, "No space left on device")
        m.setattr(np, "savez_compressed", full_savez)
        code, err = _run("diffoseg_preprocess", ["-d", str(table.DS_ID), "-c", "2d", "-np", "1"], capsys)
    assert code == 1 and err.splitlines()[-1] == (
        f"diffoseg_preprocess: error: no space left on device while writing {folder / (table.CASE + '.npz')}; "
        "free space and run the same command again")
    assert not (folder / f"{table.CASE}.npz").exists() and not list(folder.glob(".tmp_*"))
    assert np.savez_compressed is real_savez
    assert _run("diffoseg_preprocess", ["-d", str(table.DS_ID), "-c", "2d", "-np", "1"], capsys)[0] == 0
    assert list_preprocessed_cases(folder) == [f"toy_{i:03d}" for i in range(6)]
    assert {p.name: p.read_bytes() for p in folder.glob("*.npz") if p.name in kept} == kept


def test_disk_full_in_an_image_write_is_one_line_and_the_rerun_finishes(corruption_state, tmp_path, monkeypatch,
                                                                          capsys):
    """SimpleITK's WriteImage raises RuntimeError without errno when the disk fills: prediction's export stops
    with the ENOSPC line naming the image, keeps no half-written image, and --continue_prediction finishes."""
    import SimpleITK as sitk

    root = _state_copy(corruption_state, tmp_path, monkeypatch)
    args = table.argv(table.Row("diffoseg_predict", "", "", ""), root)
    out = root / "new_out"
    written = []
    real_write = sitk.WriteImage

    def full(image, name, *a):
        if written:  # the second image finds the disk full, after half its bytes
            real_write(image, name, *a)
            Path(name).write_bytes(Path(name).read_bytes()[:20])
            raise RuntimeError(f"ITK ERROR: NiftiImageIO(0x55d1): Could not write {name}: No space left on device")
        written.append(name)
        real_write(image, name, *a)
    with monkeypatch.context() as m:
        m.setattr(sitk, "WriteImage", full)
        code, err = _run("diffoseg_predict", args, capsys)
    target = _disk_full_target("diffoseg_predict", code, err, ".nii.gz")
    assert out in target.parents and not target.exists() and not [p for p in out.rglob(".tmp_*")]
    assert _run("diffoseg_predict", args + ["--continue_prediction"], capsys)[0] == 0
    assert target.is_file() and sitk.ReadImage(str(target)).GetSize() == (16, 16)


def test_disk_full_in_a_checkpoint_write_is_one_line_and_the_rerun_finishes(corruption_state, tmp_path, monkeypatch,
                                                                              capsys):
    """torch.save's zip writer raises RuntimeError without errno ("file write failed") when the disk fills: with
    the file system out of space, training stops with the ENOSPC line naming the checkpoint, keeps no
    half-written checkpoint, and the same command with --c finishes."""
    import torch

    root = _state_copy(corruption_state, tmp_path, monkeypatch)
    shutil.rmtree(root / "results" / table.DS)
    args = [str(table.DS_ID), "2d", "0", "--stage", "1", "--num_epochs", "1", "--iterations_per_epoch", "1",
            "-device", "cpu", "--no_final_validation", "--num_workers", "0"]
    stage1 = root / "results" / table.DS / table.TRAINER / "fold_0" / "stage1"
    real_save = torch.save

    def full(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        Path(f).write_bytes(Path(f).read_bytes()[:100])
        raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")
    with monkeypatch.context() as m:
        m.setattr(torch, "save", full)
        m.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 4096))
        code, err = _run("diffoseg_train", args, capsys)
    target = _disk_full_target("diffoseg_train", code, err, ".pth")
    assert target.parent == stage1 and not target.exists() and not list(stage1.glob(".tmp_*"))
    assert _run("diffoseg_train", args + ["--c"], capsys)[0] == 0
    assert (stage1 / "checkpoint_final.pth").is_file()
