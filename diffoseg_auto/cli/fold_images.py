"""Collect the raw images of one fold's validation (or training) cases into a folder of links.

`diffoseg_predict` takes a folder of images; this makes one for the held-out cases of a fold so
that demos and benchmarks predict exactly what training did not see.
`python -m diffoseg_auto.cli.fold_images DATASET FOLD OUT_FOLDER [--split val|train]`
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


from diffoseg_auto.utilities.command_runner import run_command
from diffoseg_auto.dataset.raw_dataset import open_raw_dataset
from diffoseg_auto.paths import preprocessed_dataset_folder
from diffoseg_auto.dataset.splits_file import SPLITS_FILE, load_splits, select_fold
from diffoseg_auto.training.splits import sample_cases
from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name


def link_fold_images(dataset: str | int, fold: int, output_folder: str | Path, split: str = "val",
                     max_cases: int | None = None, seed: int = 0) -> list[str]:
    """Link (or copy where links are impossible) the fold's images into ``output_folder``; returns the cases.

    ``max_cases``: only a fixed, seeded sample of the fold's cases (sample_cases), e.g. to score a large fold."""
    name = resolve_dataset_name(dataset)
    folder = preprocessed_dataset_folder(name)
    train, val = select_fold(load_splits(folder), int(fold), [], str(folder / SPLITS_FILE))
    cases = sample_cases(val if split == "val" else train, max_cases, seed)
    link_images(open_raw_dataset(name).image_files_by_case("Tr"), cases, output_folder)
    return cases


def link_test_images(dataset: str | int, output_folder: str | Path, max_cases: int | None = None,
                     seed: int = 0) -> list[str]:
    """Link the images of the dataset's test cases (imagesTs), or of a fixed, seeded sample of ``max_cases`` of
    them (sample_cases), into ``output_folder``; returns the cases ([] when the dataset has no imagesTs)."""
    files = open_raw_dataset(dataset).image_files_by_case("Ts")
    cases = sample_cases(list(files), max_cases, seed)
    link_images(files, cases, output_folder)
    return cases


def link_images(files: dict[str, list[Path]], cases: list[str], output_folder: str | Path) -> None:
    """A fresh ``output_folder`` with links to (or copies of) the image files of ``cases``."""
    out = Path(output_folder)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for case in cases:
        for f in files[case]:
            try:
                os.symlink(f.resolve(), out / f.name)
            except OSError:
                shutil.copyfile(f, out / f.name)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Link the raw images of a fold's validation cases into a folder.")
    p.add_argument("dataset")
    p.add_argument("fold", type=int)
    p.add_argument("output_folder")
    p.add_argument("--split", choices=["val", "train"], default="val")
    p.add_argument("--max_cases", type=int, default=None, help="only a fixed, seeded sample of this many cases")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed (with --max_cases)")
    a = p.parse_args(argv)
    cases = link_fold_images(a.dataset, a.fold, a.output_folder, a.split, a.max_cases, a.seed)
    print(f"{len(cases)} {a.split} cases of fold {a.fold} linked into {a.output_folder}")


if __name__ == "__main__":
    sys.exit(run_command("fold_images", main))
