"""``diffoseg_export_model_to_zip``: a trained model as one zip that another results folder installs
(``diffoseg_install_pretrained_model_from_zip``, model_install.py), as nnU-Net's ``nnUNetv2_export_model_to_zip``.

The zip holds one trainer folder (results_layout) relative to ``$diffoseg_results``, without any image:

    diffoseg_model.json                                       the manifest: dataset, trainer, plans, configuration,
                                                              folds, checkpoints, the plans' schema_version, and the
                                                              SHA-256 of every other file
    DatasetXXX_Name/<Trainer>__<Plans>__<config>/plans.json, dataset.json, dataset_fingerprint.json
        fold_N/stage<s>/<checkpoint>                          each requested checkpoint (-chk) of each trained stage
        fold_N/raters.json (+ the checkpoint it names)        experts added with diffoseg_add_rater

The fold's own final model (results_layout.fold_final_checkpoint: a copy of its last stage's, which prediction
does not read) is left out. The checkpoints carry their plans, so prediction with the installed model in another
results folder gives the same outputs for the same seed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from pathlib import Path
from typing import Sequence

from diffoseg_auto.errors import UserError
from diffoseg_auto.io.rater_list import load_rater_list
from diffoseg_auto.paths import results_root
from diffoseg_auto.plans.plans import SCHEMA_VERSION
from diffoseg_auto.results_layout import (CHECKPOINT_FINAL, fold_folder, rater_list_file,
                                          stage_folder, trained_folds, trainer_folder)
from diffoseg_auto.utilities.command_runner import run_command
from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
from diffoseg_auto.utilities.file_ops import atomic_write, load_json

MANIFEST = "diffoseg_model.json"
FORMAT_VERSION = 1
PLAN_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")  # the fingerprint when training copied it


class ModelArchiveError(UserError):
    """A model that cannot be exported, or a zip that cannot be installed (the message names the file and the fix)."""


def sha256_of(data: bytes | Path) -> str:
    """SHA-256 hex digest of bytes or of a file (read in blocks)."""
    h = hashlib.sha256()
    if isinstance(data, bytes):
        h.update(data)
        return h.hexdigest()
    with open(data, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_files(model_folder: Path, folds: Sequence[str], checkpoints: Sequence[str]) -> list[Path]:
    """The files of ``model_folder`` that the zip holds (module docstring); missing ones are one error line."""
    missing = [str(model_folder / n) for n in PLAN_FILES[:2] if not (model_folder / n).is_file()]
    files = [model_folder / n for n in PLAN_FILES if (model_folder / n).is_file()]
    for fold in folds:
        if not fold_folder(model_folder, fold).is_dir():
            raise ModelArchiveError(f"{fold_folder(model_folder, fold)}: fold {fold} was not trained. Trained folds: "
                                    f"{trained_folds(model_folder) or 'none'}; pass them with -f.")
        stages = [s for s in (1, 2) if stage_folder(model_folder, fold, s).is_dir()]
        for stage in stages:
            for name in checkpoints:
                f = stage_folder(model_folder, fold, stage) / name
                files.append(f) if f.is_file() else missing.append(str(f))
        listing = rater_list_file(model_folder, fold)
        if listing.is_file():
            added = stage_folder(model_folder, fold, 2) / load_rater_list(listing)["checkpoint"]
            files += [listing] + ([added] if added.is_file() and added not in files else [])
        if not stages:
            missing.append(str(stage_folder(model_folder, fold, 1)))
    if missing:
        raise ModelArchiveError(f"{missing[0]}: missing{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; "
                                "the model is incomplete. Finish its training, or export the folds and checkpoints "
                                "that exist (-f, -chk).")
    return files


def export_model_to_zip(dataset: str | int, configuration: str, output_file: str | Path,
                        trainer: str = "DiffOSegTrainer", plans: str = "DiffOSegPlans",
                        folds: Sequence[int | str] | None = None,
                        checkpoints: Sequence[str] = (CHECKPOINT_FINAL,)) -> Path:
    """Write ``output_file`` (a zip: module docstring) of a trained model; ``folds`` None: every trained fold."""
    dataset_name = resolve_dataset_name(dataset)
    model_folder = trainer_folder(dataset_name, trainer, plans, configuration)
    if not model_folder.is_dir():
        raise ModelArchiveError(f"{model_folder}: model folder does not exist. Check -d / -c / -tr / -p, or train it "
                                "first (diffoseg_train).")
    folds = [str(f) for f in (folds if folds else trained_folds(model_folder))]
    if not folds:
        raise ModelArchiveError(f"{model_folder}: no trained fold to export. Train one first (diffoseg_train).")
    files = model_files(model_folder, folds, checkpoints)
    plans_dict = load_json(model_folder / "plans.json")
    root = results_root()
    arcname = {f: f.relative_to(root).as_posix() for f in files}
    manifest = {"format_version": FORMAT_VERSION, "dataset_name": dataset_name, "trainer": trainer, "plans": plans,
                "configuration": configuration, "folds": folds, "checkpoints": list(checkpoints),
                "plans_schema_version": plans_dict.get("schema_version", SCHEMA_VERSION),
                "files": {arcname[f]: sha256_of(f) for f in files}}

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr(MANIFEST, json.dumps(manifest, indent=2))
            for f in files:
                z.write(f, arcname[f])

    atomic_write(output_file, write)
    return Path(output_file)


def build_export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Pack a trained model (checkpoints, plans, dataset.json, fingerprint, "
                                            "raters.json; no images) into a zip that "
                                            "diffoseg_install_pretrained_model_from_zip installs.")
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-c", required=True, help="configuration")
    p.add_argument("-o", required=True, help="output zip file")
    p.add_argument("-tr", default="DiffOSegTrainer", help="trainer (default: DiffOSegTrainer)")
    p.add_argument("-p", default="DiffOSegPlans", help="plans identifier (default: DiffOSegPlans)")
    p.add_argument("-f", nargs="+", default=None, help="folds (default: every trained fold)")
    p.add_argument("-chk", nargs="+", default=[CHECKPOINT_FINAL],
                   help=f"checkpoint file names of each stage (default: {CHECKPOINT_FINAL})")
    return p


def export_main(argv: Sequence[str] | None = None) -> None:
    a = build_export_parser().parse_args(argv)
    out = export_model_to_zip(a.d, a.c, a.o, trainer=a.tr, plans=a.p, folds=a.f, checkpoints=a.chk)
    print(f"written: {out}")


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_export_model_to_zip", export_main))
