"""Issue 33's table: every command x every file it reads x three corruptions -> the one error line it gives.
Commands are the console commands and the benchmark tool real_data.py (``TOOLS``: its records).

tests/test_robustness.py runs each row on a copy of one small pipeline state (``build_state``) and checks: exit
code 1, one line ``<command>: error: ...`` containing the row's fragment (the file's name and what to do), no
traceback, and no other file on disk changed. documentation/robustness.md holds ``render_markdown(ROWS)``
(a test compares them; `python tests/support/corruption_table.py` prints it).

Corruptions: ``missing`` (deleted), ``empty`` (0 bytes), ``truncated`` (the first half of its bytes), ``wrong``
(valid syntax, wrong shape, type or content: see ``WRONG``). Where a file may be absent by design (a rater who
did not annotate a case, splits or a fingerprint that the command writes), its ``missing`` row is not an
error and is listed in ``ABSENT_BY_DESIGN`` instead.
"""
from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DS_ID = 950
DS = f"Dataset{DS_ID:03d}_Robust"
TRAINER = f"DiffOSegTrainer__DiffOSegPlans__2d"
CASE = "toy_002"        # a case of fold 0's training set and of the preprocessed folder
VAL_CASE = "toy_000"    # predicted and scored (the hand-made prediction folder holds it)

# file kind -> path relative to the state root (raw/, preprocessed/, results/, pred/, new_rater/)
FILES = {
    "dataset.json": f"raw/{DS}/dataset.json",
    "image": f"raw/{DS}/imagesTr/{CASE}_0000.nii.gz",
    "label": f"raw/{DS}/labelsTr/rater0_dilate/{CASE}.nii.gz",
    "reference label": f"raw/{DS}/labelsTr/rater0_dilate/{VAL_CASE}.nii.gz",
    "fingerprint": f"preprocessed/{DS}/dataset_fingerprint.json",
    "plans": f"preprocessed/{DS}/DiffOSegPlans.json",
    "splits_final.json": f"preprocessed/{DS}/splits_final.json",
    "preprocessed case .npz": f"preprocessed/{DS}/DiffOSegPlans_2d/{CASE}.npz",
    "preprocessed case .pkl": f"preprocessed/{DS}/DiffOSegPlans_2d/{CASE}.pkl",
    "checkpoint_latest": f"results/{DS}/{TRAINER}/fold_0/stage1/checkpoint_latest.pth",
    "checkpoint_final (Stage I)": f"results/{DS}/{TRAINER}/fold_0/stage1/checkpoint_final.pth",
    "checkpoint_final (Stage II)": f"results/{DS}/{TRAINER}/fold_0/stage2/checkpoint_final.pth",
    "learning-curve checkpoint": f"results/{DS}/{TRAINER}/fold_0/stage1/checkpoint_stage1_at_0.5.pth",
    "add_rater checkpoint": f"results/{DS}/{TRAINER}/fold_0/stage2/checkpoint_added_raters.pth",
    "raters.json": f"results/{DS}/{TRAINER}/fold_0/raters.json",
    "samples": f"pred/samples/{VAL_CASE}.npz",
    "consensus": f"pred/consensus/{VAL_CASE}.nii.gz",
    "rater prediction": f"pred/raters/rater1_erode/{VAL_CASE}.nii.gz",
    "summary.json": f"results/{DS}/{TRAINER}/fold_0/stage1/validation/summary.json",
    "new rater's image": f"new_rater/images/{CASE}_0000.nii.gz",
    "new rater's mask": f"new_rater/masks/{CASE}.nii.gz",
    # the benchmark records (benchmarks/quality/real_data_records.py), written by the tool's own writers
    "fold record .csv": f"records/{DS}/2d/fold_0.csv",
    "fold record .json": f"records/{DS}/2d/fold_0.json",
    "curve record": f"records/{DS}/2d/curve_fold_0.csv",
    "test record test.csv": f"records/{DS}/2d/test.csv",
    "test record test.json": f"records/{DS}/2d/test.json",
    "test record test_per_case.csv": f"records/{DS}/2d/test_per_case.csv",
}

# command -> argv (state-root-relative paths in braces)
ARGV = {
    "diffoseg_plan_and_preprocess": ["-d", str(DS_ID), "-c", "2d", "-np", "1", "--verify_dataset_integrity"],
    "diffoseg_plan_experiment": ["-d", str(DS_ID)],
    "diffoseg_preprocess": ["-d", str(DS_ID), "-c", "2d", "-np", "1"],
    "diffoseg_train": [str(DS_ID), "2d", "0", "--num_epochs", "1", "--iterations_per_epoch", "1", "-device", "cpu",
                       "--no_final_validation"],
    "diffoseg_train --c": [str(DS_ID), "2d", "0", "--stage", "1", "--c", "-device", "cpu", "--no_final_validation"],
    "diffoseg_train --stage 2": [str(DS_ID), "2d", "0", "--stage", "2", "--num_epochs", "1", "-device", "cpu",
                                 "--no_final_validation", "--overwrite"],
    "diffoseg_predict": ["-i", "{val_images}", "-o", "{new_out}", "-d", str(DS_ID), "-c", "2d", "-f", "0",
                         "-device", "cpu", "--num_samples", "2", "--sampling_steps", "2", "-npp", "1", "-nps", "1"],
    "diffoseg_add_rater": ["-d", str(DS_ID), "-c", "2d", "-f", "0", "--name", "reader9", "-i", "{new_rater}/images",
                           "-l", "{new_rater}/masks", "--iterations", "1", "-device", "cpu"],
    "diffoseg_evaluate": ["-ref", "{raw}/labelsTr", "-pred", "{pred}", "-f", "0", "-np", "1"],
    "diffoseg_benchmark": ["-d", str(DS_ID), "-c", "2d", "-f", "0", "-o", "{new_out}"],
    "diffoseg_benchmark --learning_curves": ["-d", str(DS_ID), "-c", "2d", "-f", "0", "-o", "{new_out}",
                                             "--learning_curves"],
    "diffoseg_benchmark -tr A B": ["-d", str(DS_ID), "-c", "2d", "-f", "0", "-o", "{new_out}",
                                   "-tr", "DiffOSegTrainer", "ConsensusUNetTrainer"],
    # benchmarks/quality/real_data.py (TOOLS): its record reads come before any training
    "real_data.py records": ["records", "{records}/" + DS + "/2d"],
    "real_data.py compare --record": ["compare", "-d", str(DS_ID), "-c", "2d", "-f", "0", "-tr", "DiffOSegTrainer",
                                      "--minutes", "0.01", "--out", "{new_out}", "--record", "{records}"],
    "real_data.py test --record": ["test", "-d", str(DS_ID), "-c", "2d", "-tr", "DiffOSegTrainer", "--minutes", "0.01",
                                   "--test_sample", "1", "--out", "{new_out}", "--record", "{records}"],
}
# tools that are not console commands: name -> 'module:function' of their main(argv) (run through run_command)
TOOLS = {"real_data.py": "benchmarks.quality.real_data:main"}


@dataclass(frozen=True)
class Row:
    command: str      # a key of ARGV (the console command, with the options that make it read the file)
    file: str         # a key of FILES
    corruption: str   # missing | empty | truncated | wrong
    expect: str       # a fragment of the one error line (after "<command>: error: ")


def _rows(command: str, file: str, **by_corruption: str) -> list[Row]:
    return [Row(command, file, c, e) for c, e in by_corruption.items()]


_CUT = "Delete it and run the command that writes it again"
ROWS: list[Row] = [
    *_rows("diffoseg_plan_and_preprocess", "dataset.json", missing="dataset.json: missing. Every dataset folder needs",
           empty="dataset.json: not valid JSON", truncated="dataset.json: not valid JSON",
           wrong="dataset.json: holds a list, not a JSON object"),
    *_rows("diffoseg_plan_and_preprocess", "image", missing="rater1_erode/toy_002.nii.gz: label without image (no imagesTr/toy_002_0000.nii.gz). Add the image",
           empty="imagesTr/toy_002_0000.nii.gz: SimpleITK cannot read this file",
           truncated="imagesTr/toy_002_0000.nii.gz: cannot read this file, its compressed stream is truncated",
           wrong="rater0_dilate/toy_002.nii.gz: geometry differs from the image toy_002_0000.nii.gz (size [16, 16] vs image [8, 8])"),
    *_rows("diffoseg_plan_and_preprocess", "label", empty="rater0_dilate/toy_002.nii.gz: SimpleITK cannot read this file",
           truncated="rater0_dilate/toy_002.nii.gz: cannot read this file, its compressed stream is truncated",
           wrong="rater0_dilate/toy_002.nii.gz: geometry differs from the image toy_002_0000.nii.gz (size [8, 8] vs image [16, 16])"),
    *_rows("diffoseg_plan_and_preprocess", "fingerprint", empty="dataset_fingerprint.json: is empty. Recompute it",
           truncated="dataset_fingerprint.json: is not valid JSON", wrong="dataset_fingerprint.json: not a dataset "
           "fingerprint ('spacings' and 'shapes_after_crop' are not lists"),
    *_rows("diffoseg_plan_experiment", "fingerprint", missing="dataset_fingerprint.json: missing. Run "
           "`diffoseg_extract_fingerprint", empty="dataset_fingerprint.json: is empty. Recompute it",
           truncated="dataset_fingerprint.json: is not valid JSON",
           wrong="dataset_fingerprint.json: not a dataset fingerprint"),
    *_rows("diffoseg_preprocess", "plans", missing="DiffOSegPlans.json", empty="DiffOSegPlans.json",
           truncated="DiffOSegPlans.json", wrong="DiffOSegPlans.json"),
    *_rows("diffoseg_train", "plans", missing="DiffOSegPlans.json", empty="DiffOSegPlans.json",
           truncated="DiffOSegPlans.json", wrong="DiffOSegPlans.json"),
    *_rows("diffoseg_train", "splits_final.json", empty="splits_final.json: is empty. Fix or delete the file",
           truncated="splits_final.json: is not valid JSON", wrong="splits_final.json: expected a non-empty list of"),
    *_rows("diffoseg_train", "preprocessed case .npz", missing="1 of 6 case(s) are not preprocessed: toy_002",
           empty="toy_002.npz: cannot read this preprocessed case", truncated="toy_002.npz: cannot read this "
           "preprocessed case", wrong="toy_002.npz: data (1, 16, 16), seg (2, 8, 8) and rater_mask (2,) do not fit"),
    *_rows("diffoseg_train", "preprocessed case .pkl", missing="1 of 6 case(s) are not preprocessed: toy_002",
           empty="toy_002.pkl: cannot read the case's properties", truncated="toy_002.pkl: cannot read the case's "
           "properties", wrong="toy_002.pkl: holds a list, not the case's properties"),
    *_rows("diffoseg_train --c", "checkpoint_latest", empty="checkpoint_latest.pth: is empty. Restore it",
           truncated="checkpoint_latest.pth: cannot be read, cut short or not a checkpoint",
           wrong="checkpoint_latest.pth: not a diffoseg_auto checkpoint"),
    *_rows("diffoseg_train --stage 2", "checkpoint_final (Stage I)", missing="stage1/checkpoint_final.pth",
           empty="checkpoint_final.pth: is empty. Restore it", truncated="checkpoint_final.pth: cannot be read",
           wrong="checkpoint_final.pth: not a diffoseg_auto checkpoint"),
    *_rows("diffoseg_predict", "checkpoint_final (Stage I)", missing="stage1/checkpoint_final.pth: checkpoint not found",
           empty="checkpoint_final.pth: is empty. Restore it", truncated="checkpoint_final.pth: cannot be read",
           wrong="checkpoint_final.pth: not a diffoseg_auto checkpoint"),
    *_rows("diffoseg_predict", "checkpoint_final (Stage II)", empty="checkpoint_final.pth: is empty. Restore it", truncated="checkpoint_final.pth: cannot be read",
           wrong="checkpoint_final.pth: not a diffoseg_auto checkpoint"),
    *_rows("diffoseg_predict", "raters.json", empty="raters.json: is empty. Restore it, or delete it",
           truncated="raters.json: is not valid JSON", wrong="raters.json: not a rater list written by diffoseg_add_rater"),
    *_rows("diffoseg_predict", "add_rater checkpoint", missing="checkpoint_added_raters.pth: checkpoint not found, but",
           empty="checkpoint_added_raters.pth: is empty", truncated="checkpoint_added_raters.pth: cannot be read",
           wrong="checkpoint_added_raters.pth: not a diffoseg_auto checkpoint"),
    *_rows("diffoseg_add_rater", "checkpoint_final (Stage II)", missing="stage2/checkpoint_final.pth: no Stage II model",
           empty="checkpoint_final.pth: is empty", truncated="checkpoint_final.pth: cannot be read",
           wrong="checkpoint_final.pth: not a diffoseg_auto checkpoint"),
    *_rows("diffoseg_add_rater", "raters.json", empty="raters.json: is empty", truncated="raters.json: is not valid JSON",
           wrong="raters.json: not a rater list written by diffoseg_add_rater"),
    *_rows("diffoseg_add_rater", "add_rater checkpoint", missing="checkpoint_added_raters.pth: checkpoint not found",
           empty="checkpoint_added_raters.pth: is empty", truncated="checkpoint_added_raters.pth: cannot be read",
           wrong="checkpoint_added_raters.pth: not a diffoseg_auto checkpoint"),
    *_rows("diffoseg_add_rater", "new rater's image", missing="masks/toy_002.nii.gz: mask without its image",
           empty="images/toy_002_0000.nii.gz: SimpleITK cannot read this file",
           truncated="images/toy_002_0000.nii.gz: cannot read this file, its compressed stream is truncated",
           wrong="differs from its image"),
    *_rows("diffoseg_add_rater", "new rater's mask", missing="images/toy_002_0000.nii.gz: image without the new expert's mask",
           empty="masks/toy_002.nii.gz: SimpleITK cannot read this file",
           truncated="masks/toy_002.nii.gz: cannot read this file, its compressed stream is truncated",
           wrong="differs from its image"),
    *_rows("diffoseg_evaluate", "dataset.json", empty="dataset.json: is empty. Fix it",
           truncated="dataset.json: is not valid JSON", wrong="dataset.json: not a dataset.json"),
    *_rows("diffoseg_evaluate", "reference label", empty="rater0_dilate/toy_000.nii.gz: SimpleITK cannot read this file",
           truncated="rater0_dilate/toy_000.nii.gz: cannot read this file, its compressed stream is truncated",
           wrong="rater1_erode/toy_000.nii.gz: geometry (size) differs from the reference"),
    *_rows("diffoseg_evaluate", "samples", empty="samples/toy_000.npz: is empty. Delete it and predict the case again",
           truncated="samples/toy_000.npz: cannot be read: cut short or not an .npz",
           wrong="samples/toy_000.npz: has keys ['x']; expected 'samples'"),
    *_rows("diffoseg_evaluate", "consensus", empty="consensus/toy_000.nii.gz: SimpleITK cannot read this file",
           truncated="consensus/toy_000.nii.gz: cannot read this file",
           wrong="consensus/toy_000.nii.gz: geometry (size) differs from the reference"),
    *_rows("diffoseg_evaluate", "rater prediction", missing="Stage II predictions are missing for some rater prompts",
           empty="raters/rater1_erode/toy_000.nii.gz: SimpleITK cannot read this file",
           truncated="raters/rater1_erode/toy_000.nii.gz: cannot read this file",
           wrong="raters/rater1_erode/toy_000.nii.gz: geometry (size) differs from the reference"),
    *_rows("diffoseg_benchmark", "summary.json", empty="summary.json: is empty. Delete it and score the predictions",
           truncated="summary.json: is not valid JSON", wrong="summary.json: not an evaluation summary"),
    *_rows("diffoseg_benchmark --learning_curves", "learning-curve checkpoint",
           empty="checkpoint_stage1_at_0.5.pth: is empty", truncated="checkpoint_stage1_at_0.5.pth: cannot be read",
           wrong="checkpoint_stage1_at_0.5.pth: not a diffoseg_auto checkpoint"),
    *_rows("diffoseg_benchmark -tr A B", "splits_final.json", missing="splits_final.json: no splits yet",
           empty="splits_final.json: is empty", truncated="splits_final.json: is not valid JSON",
           wrong="splits_final.json: expected a non-empty list of"),
    *_rows("real_data.py records", "fold record .csv", missing="fold_0.csv: does not exist. Restore it (git checkout)",
           empty="fold_0.csv: is empty. Restore it", truncated="fold_0.csv: cut short (its last line has no end)",
           wrong="fold_0.csv: not a fold record (columns ['a', 'b'], expected ['dataset',"),
    *_rows("real_data.py records", "fold record .json", missing="fold_0.json: does not exist. Restore it (git checkout)",
           empty="fold_0.json: is empty. Restore it", truncated="fold_0.json: is not valid JSON",
           wrong="fold_0.json: holds a JSON list, not a fold record's provenance"),
    *_rows("real_data.py records", "curve record", empty="curve_fold_0.csv: is empty. Restore it",
           truncated="curve_fold_0.csv: cut short", wrong="curve_fold_0.csv: not a curve record (columns ['a', 'b']"),
    *_rows("real_data.py compare --record", "fold record .csv", empty="fold_0.csv: is empty. Restore it",
           truncated="fold_0.csv: cut short", wrong="fold_0.csv: not a fold record"),
    *_rows("real_data.py test --record", "test record test.csv", missing="test.csv: does not exist. Restore it (git checkout)",
           empty="test.csv: is empty", truncated="test.csv: cut short",
           wrong="test.csv: not a held-out test summary (columns ['a', 'b']"),
    *_rows("real_data.py test --record", "test record test.json", missing="test.json: does not exist. Restore it",
           empty="test.json: is empty", truncated="test.json: is not valid JSON",
           wrong="test.json: not a held-out test record ('sample' of the wrong type)"),
    *_rows("real_data.py test --record", "test record test_per_case.csv", missing="test_per_case.csv: does not exist",
           empty="test_per_case.csv: is empty", truncated="test_per_case.csv: cut short",
           wrong="test_per_case.csv: not a held-out test's per-case table (columns ['a', 'b'], expected ['method', "
                 "'mode', 'case'] and more)"),
]

# (command, file): why its "missing" row is not an error
ABSENT_BY_DESIGN = {
    ("diffoseg_plan_and_preprocess", "label"): "the rater did not annotate the case (dataset_format.md)",
    ("diffoseg_plan_and_preprocess", "fingerprint"): "computed",
    ("diffoseg_train", "splits_final.json"): "created",
    ("diffoseg_train --c", "checkpoint_latest"): "no checkpoint to continue: training starts (nnU-Net's --c)",
    ("diffoseg_predict", "checkpoint_final (Stage II)"): "a Stage I model: the consensus only",
    ("diffoseg_predict", "raters.json"): "no expert was added: the dataset's raters",
    ("diffoseg_add_rater", "raters.json"): "the first added expert extends Stage II's final model",
    ("diffoseg_evaluate", "reference label"): "the rater did not annotate the case",
    ("diffoseg_evaluate", "dataset.json"): "rater order and ending come from the folders",
    ("diffoseg_evaluate", "samples"): "scored on the consensus",
    ("diffoseg_evaluate", "consensus"): "scored on the samples",
    ("diffoseg_benchmark", "summary.json"): "reported and skipped: no number is made up",
    ("diffoseg_benchmark --learning_curves", "learning-curve checkpoint"): "not a point of the curve",
    ("real_data.py records", "curve record"): "the fold was recorded without --curves",
    ("real_data.py compare --record", "fold record .csv"): "not recorded yet: the fold's methods are trained",
    ("real_data.py test --record", "the three test records"): "not recorded yet: the methods are trained",
}


def _wrong_image(path: Path) -> None:
    """A valid image of another size (8 x 8) than the files beside it."""
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.uint8 if "label" in str(path) or "mask" in str(path)
                                                    or "pred" in str(path) else np.float32)), str(path), True)


def _wrong_checkpoint(path: Path) -> None:
    import torch

    torch.save({"weights": [1, 2, 3]}, path)


def _wrong_npz(path: Path) -> None:
    if path.parent.name == "samples":
        np.savez_compressed(path, x=np.zeros(3))
    else:  # a preprocessed case whose seg does not fit its data
        with np.load(path) as z:
            data = z["data"]
        np.savez_compressed(path, data=data, seg=np.zeros((2, 8, 8), np.uint8), rater_mask=np.ones(2, bool))


def wrong_content(kind: str, path: Path) -> None:
    """Valid syntax, wrong shape, type or content."""
    if path.suffix == ".json":
        text = {"splits_final.json": json.dumps({"train": [], "val": []}), "summary.json": json.dumps([0.5]),
                "fingerprint": json.dumps({"spacings": [[1, 1]], "shapes_after_crop": 3,
                                           "foreground_intensity_properties_per_channel": {}}),
                "plans": json.dumps({"configurations": 3}), "raters.json": json.dumps({"raters": "reader9"}),
                "test record test.json": json.dumps({"sample": [0]})}
        path.write_text(text.get(kind, json.dumps([1, 2, 3])))
    elif path.suffix == ".csv":  # a table of other columns
        path.write_text("a,b\n1,2\n")
    elif path.suffix == ".pth":
        _wrong_checkpoint(path)
    elif path.suffix == ".npz":
        _wrong_npz(path)
    elif path.suffix == ".pkl":
        path.write_bytes(pickle.dumps([1, 2]))
    else:
        _wrong_image(path)


def corrupt(kind: str, path: Path, corruption: str) -> None:
    if corruption == "missing":
        path.unlink()
    elif corruption == "empty":
        path.write_bytes(b"")
    elif corruption == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif corruption == "wrong":
        wrong_content(kind, path)
    else:
        raise ValueError(corruption)


def render_markdown(rows: list[Row] = ROWS) -> str:
    """The table of documentation/robustness.md (between its markers)."""
    lines = ["| command | file | corruption | the error line says |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r.command}` | {r.file} | {r.corruption} | {r.expect.replace('|', '/')} |")
    lines += ["", "Absent by design (the `missing` row of these is not an error):", "",
              "| command | file | without it |", "|---|---|---|"]
    lines += [f"| `{c}` | {f} | {why} |" for (c, f), why in ABSENT_BY_DESIGN.items()]
    return "\n".join(lines)


def main_of(command: str):
    """The main(argv) of a row's command (its first word): a console command's, or a tool's (TOOLS)."""
    from diffoseg_auto.cli.console import command_targets, load_main

    name = command.split()[0]
    return load_main(TOOLS[name] if name in TOOLS else command_targets()[name])


def _environment(root: Path) -> dict[str, str]:
    return {"diffoseg_raw": str(root / "raw"), "diffoseg_preprocessed": str(root / "preprocessed"),
            "diffoseg_results": str(root / "results")}


def build_state(root: Path, monkeypatch) -> None:
    """The pipeline's files for DS: raw toy data, fingerprint, plans, preprocessed cases, splits, a tiny model
    (random weights: every row fails before a weight matters), a prediction folder, a validation summary, a
    learning-curve checkpoint and a new expert's cases."""
    import torch

    from dataset_conversion.generate_toy_dataset import generate_toy_dataset
    from diffoseg_auto.dataset.raw_dataset import DatasetDescription, RawDataset, write_dataset_json
    from diffoseg_auto.evaluation.evaluate_entrypoint import evaluate_folder
    from diffoseg_auto.inference.model_loading import trained_network
    from diffoseg_auto.io.checkpoint_io import save_checkpoint
    from diffoseg_auto.io.image_io import read_seg
    from diffoseg_auto.plans.plans import load_plans
    from diffoseg_auto.training.splits import get_or_create_splits, select_fold
    from planners.plan_and_preprocess_entrypoints import plan_and_preprocess
    from support.pipeline import make_plans_tiny

    for k, v in _environment(root).items():
        monkeypatch.setenv(k, v)
        Path(v).mkdir(parents=True, exist_ok=True)
    raw = generate_toy_dataset(root / "raw" / DS, dim=2, num_cases=6, num_raters=2, image_size=16, seed=1)
    plan_and_preprocess(["-d", str(DS_ID), "-np", "1", "-c", "2d"])
    pp = root / "preprocessed" / DS
    make_plans_tiny(pp / "DiffOSegPlans.json", [16, 16], 0.5)
    ds = RawDataset(raw)
    splits = get_or_create_splits(pp, ds.cases, ds.case_groups)
    _, val = select_fold(splits, 0, ds.cases)
    assert VAL_CASE in val and CASE not in val, val
    plans = load_plans(pp / "DiffOSegPlans.json")
    model = root / "results" / DS / TRAINER
    write_dataset_json(model, DatasetDescription(name="Robust", channel_names={0: "toy"},
                                                 labels={"background": 0, "fg": 1}, raters=plans.raters,
                                                 num_training=6, file_ending=".nii.gz"))
    logging_state = {"epoch_start_timestamps": [0.0], "epoch_end_timestamps": [1.0]}
    for stage, names in ((1, ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_stage1_at_0.5.pth")),
                         (2, ("checkpoint_final.pth",))):
        torch.manual_seed(stage)
        net = trained_network("DiffOSegTrainer", plans, "2d", stage)
        init_args = {"trainer_name": "DiffOSegTrainer", "plans_name": "DiffOSegPlans", "configuration": "2d",
                     "dataset_name": DS, "stage": stage, "fold": 0, "num_raters": plans.num_raters,
                     "num_classes": plans.num_classes}
        ck = {"network_weights": net.state_dict(), "init_args": init_args, "plans": plans.to_dict(),
              "trainer_name": "DiffOSegTrainer", "epoch": 1, "logging": logging_state}
        for name in names:
            save_checkpoint(model / "fold_0" / f"stage{stage}" / name, ck)
    shutil.copyfile(model / "fold_0" / "stage2" / "checkpoint_final.pth", model / "fold_0" / "checkpoint_final.pth")
    images = ds.image_files_by_case("Tr")
    (root / "val_images").mkdir()
    for case in val:
        for f in images[case]:
            shutil.copyfile(f, root / "val_images" / f.name)
    pred = root / "pred"
    labels = {r: read_seg(raw / "labelsTr" / r / f"{VAL_CASE}.nii.gz")[0] for r in ds.raters}
    (pred / "samples").mkdir(parents=True)
    np.savez_compressed(pred / "samples" / f"{VAL_CASE}.npz", samples=np.stack(list(labels.values())))
    (pred / "consensus").mkdir()
    shutil.copyfile(raw / "labelsTr" / ds.raters[0] / f"{VAL_CASE}.nii.gz", pred / "consensus" / f"{VAL_CASE}.nii.gz")
    for r in ds.raters:
        (pred / "raters" / r).mkdir(parents=True)
        shutil.copyfile(raw / "labelsTr" / r / f"{VAL_CASE}.nii.gz", pred / "raters" / r / f"{VAL_CASE}.nii.gz")
    evaluate_folder(raw / "labelsTr", pred, model / "fold_0" / "stage1" / "validation" / "summary.json")
    (model / "fold_0" / "stage1" / "validation" / "summary_per_case.csv").unlink()
    for sub, src in (("images", images[CASE][0]), ("masks", raw / "labelsTr" / ds.raters[0] / f"{CASE}.nii.gz")):
        (root / "new_rater" / sub).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / "new_rater" / sub / (src.name if sub == "images" else f"{CASE}.nii.gz"))
    _write_records(root, raw, model, pred)


def _write_records(root: Path, raw: Path, model: Path, pred: Path) -> None:
    """The benchmark records of the prediction folder, written by real_data_records.py's own writers: fold 0's
    scored rows (compare --record), a learning-curve point and a held-out test record (test --record) on a test
    split (imagesTs/labelsTs) that holds VAL_CASE."""
    import pandas as pd

    from benchmarks.quality.real_data_records import record_curve, record_fold, record_held_out
    from benchmarks.quality.real_data_test_table import score_test_cases
    from diffoseg_auto.dataset.raw_dataset import RawDataset
    from diffoseg_auto.evaluation.learning_curves import CURVE_COLUMNS, CURVE_METRICS, curve_points
    from diffoseg_auto.evaluation.method_comparison import COLUMNS, score_fold
    from diffoseg_auto.evaluation.summary_file import load_summary

    ds = RawDataset(raw)
    method = {"DiffOSeg": [pred]}
    means, _ = score_fold(ds, method, [VAL_CASE], 2, modes=("strict",))
    rows = [[DS, "2d", row, 0, 1, mode, k, v] for (row, mode), m in means.items() for k, v in m.items()]
    record_fold(root / "records", pd.DataFrame(rows, columns=COLUMNS), 0,
                {"command": "corruption_table.py", "raters": ds.raters, "methods": {"DiffOSegTrainer": {}}})
    metrics = load_summary(model / "fold_0" / "stage1" / "validation" / "summary.json")["metrics"]
    curve = [{"method": "DiffOSeg", "fold": 0, **{k: p[k] for k in ("stage", "fraction", "epoch", "seconds")},
              "metric": m, "value": metrics[m]} for p in curve_points(model, 0) for m in CURVE_METRICS]
    assert record_curve(root / "records", DS, "2d", 0, pd.DataFrame(curve, columns=CURVE_COLUMNS)) is not None
    (raw / "imagesTs").mkdir()
    shutil.copyfile(raw / "imagesTr" / f"{VAL_CASE}_0000.nii.gz", raw / "imagesTs" / f"{VAL_CASE}_0000.nii.gz")
    for r in ds.raters:
        (raw / "labelsTs" / r).mkdir(parents=True)
        shutil.copyfile(raw / "labelsTr" / r / f"{VAL_CASE}.nii.gz", raw / "labelsTs" / r / f"{VAL_CASE}.nii.gz")
    per_case, sample = score_test_cases(ds, method, [VAL_CASE], 2)
    record_held_out(root / "records", per_case, sample, {"dataset": DS, "configuration": "2d",
                                                           "sample": {"seed": 0, "cases": [VAL_CASE]}},
                    {"DiffOSeg": {"command": "corruption_table.py"}})


def prepare(row: Row, root: Path) -> None:
    """What the row's command needs beyond the state, so that it reaches the file (done before the snapshot)."""
    fold = root / "results" / DS / TRAINER / "fold_0"
    if row.file in ("raters.json", "add_rater checkpoint"):  # an expert added before
        (fold / "raters.json").write_text(json.dumps({"raters": ["rater0_dilate", "rater1_erode", "reader8"],
                                                      "checkpoint": "checkpoint_added_raters.pth", "added": []}))
        shutil.copyfile(fold / "stage2" / "checkpoint_final.pth", fold / "stage2" / "checkpoint_added_raters.pth")
    if row.command == "diffoseg_train --stage 2":  # Stage II not trained yet
        shutil.rmtree(fold / "stage2")
        (fold / "checkpoint_final.pth").unlink()
    if row.command == "diffoseg_train --c":  # an interrupted Stage I
        (fold / "stage1" / "checkpoint_final.pth").unlink()
    if row.command == "diffoseg_plan_and_preprocess" and row.file in ("image", "label"):  # a dataset not planned yet
        shutil.rmtree(root / "preprocessed" / DS)
    if row.command == "diffoseg_train":  # not trained yet
        shutil.rmtree(root / "results" / DS)


def argv(row: Row, root: Path) -> list[str]:
    names = {"raw": str(root / "raw" / DS), "pred": str(root / "pred"), "val_images": str(root / "val_images"),
             "new_out": str(root / "new_out"), "new_rater": str(root / "new_rater"), "records": str(root / "records")}
    return [a.format(**names) for a in ARGV[row.command]]


if __name__ == "__main__":
    print(render_markdown())
