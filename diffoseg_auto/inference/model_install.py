"""``diffoseg_install_pretrained_model_from_zip``: install a model zip of ``diffoseg_export_model_to_zip``
(model_export.py: the zip's layout) into ``$diffoseg_results``.

The zip is checked before a file is written: a damaged archive (not a zip, a CRC or SHA-256 mismatch, files that
differ from the manifest, no manifest), a model of another plans schema version than this code reads, or a model
that is already installed there is refused with one line.
"""
from __future__ import annotations

import argparse
import json
import sys
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Sequence

from diffoseg_auto.inference.model_export import MANIFEST, ModelArchiveError, sha256_of
from diffoseg_auto.paths import results_root
from diffoseg_auto.plans.plans import SCHEMA_VERSION, PlansValidationError, plans_from_dict
from diffoseg_auto.results_layout import trainer_folder
from diffoseg_auto.utilities.command_runner import run_command
from diffoseg_auto.utilities.file_ops import atomic_write


def read_manifest(archive: zipfile.ZipFile, zip_file: Path) -> dict:
    """The manifest, after the archive's own CRC check; a damaged or foreign zip is a one-line error."""
    try:
        damaged = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:  # a corrupt member header or stream
        raise ModelArchiveError(f"{zip_file}: damaged ({e}). Download or export it again.") from None
    if damaged is not None:
        raise ModelArchiveError(f"{zip_file}: damaged ({damaged} fails its CRC check). Download or export it again.")
    try:
        manifest = json.loads(archive.read(MANIFEST))
        files, plans_version = dict(manifest["files"]), manifest["plans_schema_version"]
        prefix = trainer_folder(manifest["dataset_name"], manifest["trainer"], manifest["plans"],
                                manifest["configuration"], root=".").as_posix().removeprefix("./") + "/"
    except (KeyError, TypeError):
        raise ModelArchiveError(f"{zip_file}: no {MANIFEST} (or an incomplete one): not a model written by "
                                "diffoseg_export_model_to_zip. Export it with that command.") from None
    except ValueError as e:
        raise ModelArchiveError(f"{zip_file}: {MANIFEST} is not valid JSON ({e}). Export the model again.") from None
    if plans_version != SCHEMA_VERSION:
        raise ModelArchiveError(f"{zip_file}: the model's plans have schema_version {plans_version}, this diffoseg_auto "
                                f"reads {SCHEMA_VERSION}. Install it with the diffoseg_auto version it was trained with, "
                                "or retrain it.")
    names = set(archive.namelist()) - {MANIFEST}
    unsafe = [n for n in names | set(files) if not n.startswith(prefix) or ".." in PurePosixPath(n).parts]
    if unsafe or names != set(files) or f"{prefix}plans.json" not in files:
        what = (f"{unsafe[0]} lies outside {prefix}" if unsafe else f"no {prefix}plans.json" if names == set(files)
                else f"files {sorted(names ^ set(files))[:3]} differ from the manifest")
        raise ModelArchiveError(f"{zip_file}: damaged ({what}). Download or export it again.")
    for name, digest in files.items():
        if sha256_of(archive.read(name)) != digest:
            raise ModelArchiveError(f"{zip_file}: damaged ({name} does not match its SHA-256). Download or export it again.")
    return manifest


def install_model_from_zip(zip_file: str | Path) -> Path:
    """Install the model of ``zip_file`` into $diffoseg_results; returns its trainer folder."""
    zip_file = Path(zip_file)
    if not zip_file.is_file():
        raise ModelArchiveError(f"{zip_file}: file does not exist. Give the zip written by diffoseg_export_model_to_zip.")
    try:
        archive = zipfile.ZipFile(zip_file)
    except zipfile.BadZipFile:
        raise ModelArchiveError(f"{zip_file}: damaged (not a readable zip archive). Download or export it again.") from None
    root = results_root()
    with archive:
        manifest = read_manifest(archive, zip_file)
        target = trainer_folder(manifest["dataset_name"], manifest["trainer"], manifest["plans"],
                                manifest["configuration"], root=root)
        plans_name = (target / "plans.json").relative_to(root).as_posix()
        try:
            plans_from_dict(json.loads(archive.read(plans_name)), where=f"{zip_file}:{plans_name}")
        except (PlansValidationError, ValueError) as e:
            raise ModelArchiveError(f"{zip_file}: its plans cannot be read ({str(e).splitlines()[0]}). Export the model "
                                    "again with this diffoseg_auto version.") from None
        present = [n for n in manifest["files"] if (root / n).exists()]
        if present:
            raise ModelArchiveError(f"{target}: already installed ({root / present[0]} exists). Delete {target} to "
                                    "install this zip again, or install into another $diffoseg_results.")
        for name in manifest["files"]:
            atomic_write(root / name, lambda p, name=name: p.write_bytes(archive.read(name)))
    return target


def build_install_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Install a model zip written by diffoseg_export_model_to_zip into "
                                            "$diffoseg_results (checked first: damaged, another plans version or "
                                            "already installed is refused).")
    p.add_argument("zip", help="the model zip")
    return p


def install_main(argv: Sequence[str] | None = None) -> None:
    a = build_install_parser().parse_args(argv)
    print(f"installed: {install_model_from_zip(a.zip)}")


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_install_pretrained_model_from_zip", install_main))
