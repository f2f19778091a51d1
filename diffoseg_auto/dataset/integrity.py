"""Check a raw multi-rater dataset before planning (format: documentation/dataset_format.md).

``verify_dataset_integrity`` collects *all* problems (one message each, naming the file and
the fix) instead of stopping at the first, so a user fixes a dataset in one pass.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from diffoseg_auto.configuration import default_num_processes
from diffoseg_auto.errors import UserError
from diffoseg_auto.io.image_io import (
    NATURAL_IMAGE_ENDINGS, SUPPORTED_FILE_ENDINGS, ImageReadError, geometry_matches, read_image_file, read_seg,
)
from diffoseg_auto.utilities.command_runner import run_command
from diffoseg_auto.utilities.worker_lifeline import watch_parent

GEOMETRY_TOLERANCE = 1e-3
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")
_MIN_CASES_FOR_POOL = 4  # below this, starting worker processes costs more than it saves


class DatasetIntegrityError(UserError, RuntimeError):
    """A raw dataset violates the format; the message lists every problem."""


def _check_dataset_json(folder: Path) -> tuple[dict | None, list[str]]:
    """Field-level checks. Returns (dataset.json or None when unreadable, problems)."""
    path = folder / "dataset.json"
    if not path.is_file():
        return None, [f"{path}: missing. Every dataset needs a dataset.json (see documentation/dataset_format.md)."]
    try:
        dj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        return None, [f"{path}: not valid JSON ({e}). Fix the syntax."]
    if not isinstance(dj, dict):
        return None, [f"{path}: must contain a JSON object with the fields of documentation/dataset_format.md."]
    problems = []
    for key in ("name", "channel_names", "labels", "numTraining", "file_ending", "raters"):
        if key not in dj:
            problems.append(f"{path}: field '{key}' is missing. Add it (see documentation/dataset_format.md).")
    ch = dj.get("channel_names")
    if "channel_names" in dj and (not isinstance(ch, dict) or not ch):
        problems.append(f"{path}: 'channel_names' must be a non-empty object like {{\"0\": \"CT\"}}.")
    elif isinstance(ch, dict) and sorted(ch) != [str(i) for i in range(len(ch))]:
        problems.append(f"{path}: 'channel_names' keys must be \"0\"..\"{len(ch) - 1}\", got {sorted(ch)}.")
    labels = dj.get("labels")
    if "labels" in dj:
        if not isinstance(labels, dict) or not labels:
            problems.append(f"{path}: 'labels' must be a non-empty object name -> integer value.")
        elif not all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
            problems.append(f"{path}: 'labels' values must be single integers (regions are not supported), got {labels}.")
        else:
            values = sorted(labels.values())
            if labels.get("background") != 0:
                problems.append(f"{path}: 'labels' must contain \"background\": 0.")
            if values != list(range(len(values))):
                problems.append(
                    f"{path}: label values must be unique and consecutive 0..K-1, got {values}. Renumber the labels "
                    "(and the label files)."
                )
    raters = dj.get("raters")
    if "raters" in dj and (not isinstance(raters, list) or not raters
                           or not all(isinstance(r, str) and r for r in raters)):
        problems.append(f"{path}: 'raters' must be a non-empty list of rater folder names, got {raters!r}.")
    elif isinstance(raters, list) and len(set(raters)) != len(raters):
        problems.append(f"{path}: 'raters' contains duplicates: {raters}. Each rater needs its own folder name.")
    fe = dj.get("file_ending")
    if "file_ending" in dj and fe not in SUPPORTED_FILE_ENDINGS:
        problems.append(f"{path}: file_ending {fe!r} is not supported. Use one of {', '.join(SUPPORTED_FILE_ENDINGS)}.")
    if "numTraining" in dj and not (isinstance(dj["numTraining"], int) and not isinstance(dj["numTraining"], bool)):
        problems.append(f"{path}: 'numTraining' must be an integer, got {dj['numTraining']!r}.")
    if "case_groups" in dj and not isinstance(dj["case_groups"], dict):
        problems.append(f"{path}: 'case_groups' must be an object case -> group name.")
    return dj, problems


def _scan_images(images: Path, ending: str, num_channels: int | None) -> tuple[dict[str, list[Path]], set[str], list[str]]:
    """Case -> channel files, the cases with missing/extra channel files, and the problems found."""
    problems: list[str] = []
    found: dict[str, dict[int, Path]] = {}
    for f in sorted(images.iterdir()):
        if f.name.startswith("."):
            continue
        if f.is_dir() or not f.name.endswith(ending):
            problems.append(f"{f}: stray file in imagesTr (file_ending is {ending}). Remove it or convert it to {ending}.")
            continue
        m = _CHANNEL_RE.match(f.name[: -len(ending)])
        if m is None:
            problems.append(f"{f}: image name must be <case>_XXXX{ending} (4-digit channel index). Rename it.")
            continue
        found.setdefault(m.group("case"), {})[int(m.group("ch"))] = f
    natural = ending in NATURAL_IMAGE_ENDINGS
    cases, incomplete = {}, set()
    for case, chans in sorted(found.items()):
        n = num_channels or 1
        # natural images may carry several channels in one RGB file: then fewer files are fine
        expected = range(max(chans) + 1) if natural else range(max(n, max(chans) + 1))
        missing = [i for i in expected if i not in chans]
        extra = [chans[i] for i in chans if num_channels is not None and i >= num_channels]
        for i in missing:
            problems.append(f"{images / f'{case}_{i:04d}{ending}'}: missing channel {i} of case '{case}'. "
                            f"Add it (dataset.json lists {n} channel(s)).")
        for f in extra:
            problems.append(f"{f}: channel index beyond channel_names ({n} channel(s)). Remove it or add the channel "
                            "to dataset.json.")
        if missing or extra:
            incomplete.add(case)
        cases[case] = [chans[i] for i in sorted(chans)]
    return cases, incomplete, problems


def _check_case(case: str, image_files: list[Path], label_files: list[Path], num_channels: int | None,
                label_values: list[int] | None) -> list[str]:
    """Content checks of one case (runs in a worker process when num_processes > 1)."""
    problems = []
    props, total_channels = None, 0
    for f in image_files:
        try:
            arr, p = read_image_file(f)
        except ImageReadError as e:
            problems.append(f"{e}")
            continue
        total_channels += arr.shape[0]
        if not np.isfinite(arr).all():
            n_bad = int((~np.isfinite(arr)).sum())
            problems.append(f"{f}: contains {n_bad} NaN/Inf value(s). Replace them (e.g. by the minimum intensity).")
        if props is None:
            props = p
        else:
            bad = geometry_matches(props, p, GEOMETRY_TOLERANCE)
            if bad:
                problems.append(f"{f}: {', '.join(bad)} differ(s) from channel file {image_files[0].name}. "
                                "All channels of a case must share one geometry; resample it.")
    if num_channels is not None and props is not None and total_channels != num_channels and not problems:
        problems.append(
            f"{image_files[0]}: case '{case}' has {total_channels} channel(s) in {[f.name for f in image_files]} but "
            f"channel_names lists {num_channels}. Use one file per channel or one RGB file for 3 channels, "
            "consistently with channel_names."
        )
    for lf in label_files:
        try:
            seg, lp = read_seg(lf)
        except ImageReadError as e:
            problems.append(f"{e}")
            continue
        if props is not None:
            bad = geometry_matches(props, lp, GEOMETRY_TOLERANCE)
            if bad:
                detail = "; ".join(f"{k} {lp[k if k != 'size' else 'shape']} vs image "
                                   f"{props[k if k != 'size' else 'shape']}" for k in bad)
                problems.append(f"{lf}: geometry differs from the image {image_files[0].name} ({detail}). "
                                "Save the label in the image's geometry.")
        if label_values is not None:
            if np.issubdtype(seg.dtype, np.floating) and not np.array_equal(seg, np.round(seg)):
                problems.append(f"{lf}: non-integer label values. Save integer class labels.")
            values = np.unique(seg)
            unknown = sorted(set(values.tolist()) - set(label_values))
            if unknown:
                problems.append(f"{lf}: label value(s) {unknown} not in dataset.json labels {sorted(label_values)}. "
                                "Fix the label file or add the labels.")
    return problems


def _check_case_star(args: tuple) -> list[str]:
    return _check_case(*args)


def verify_dataset_integrity(folder: Path, num_processes: int = 1) -> list[str]:
    """All problems of the raw dataset in ``folder`` (empty list: the dataset is valid)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder}: dataset folder does not exist. Convert or generate the dataset first."]
    dj, problems = _check_dataset_json(folder)
    if dj is None:
        return problems
    ending = dj.get("file_ending") if dj.get("file_ending") in SUPPORTED_FILE_ENDINGS else None
    ch = dj.get("channel_names")
    num_channels = len(ch) if isinstance(ch, dict) and ch else None
    raters = [r for r in dj.get("raters", []) if isinstance(r, str) and r] if isinstance(dj.get("raters"), list) else []
    labels = dj.get("labels")
    label_values = (sorted(labels.values()) if isinstance(labels, dict)
                    and all(isinstance(v, int) for v in labels.values()) else None)
    if ending is None:
        return problems  # without a valid file ending no file can be classified

    images = folder / "imagesTr"
    if not images.is_dir():
        problems.append(f"{images}: missing. Put the training images there as <case>_0000{ending}.")
        return problems
    cases, incomplete, p = _scan_images(images, ending, num_channels)
    problems += p
    if isinstance(dj.get("numTraining"), int) and dj["numTraining"] != len(cases):
        problems.append(f"{folder / 'dataset.json'}: numTraining is {dj['numTraining']} but imagesTr holds {len(cases)} "
                        f"case(s). Set numTraining to {len(cases)}.")
    groups = dj.get("case_groups")
    if isinstance(groups, dict):
        unknown = sorted(set(groups) - set(cases))
        if unknown:
            problems.append(f"{folder / 'dataset.json'}: case_groups names case(s) without images: {unknown[:10]}"
                            f"{' ...' if len(unknown) > 10 else ''}. Remove them from case_groups.")

    labels_dir = folder / "labelsTr"
    label_files: dict[str, list[Path]] = {c: [] for c in cases}
    if not labels_dir.is_dir():
        problems.append(f"{labels_dir}: missing. Put each rater's labels in labelsTr/<rater>/<case>{ending}.")
    else:
        present = {p.name: p for p in labels_dir.iterdir() if not p.name.startswith(".")}
        for name, p in sorted(present.items()):
            if not p.is_dir():
                problems.append(f"{p}: stray file in labelsTr. Labels go in labelsTr/<rater>/<case>{ending}; move or remove it.")
            elif name not in raters:
                problems.append(f"{p}: rater folder not listed in dataset.json 'raters' {raters}. "
                                "Add the rater to 'raters' or remove the folder.")
        for r in raters:
            rdir = labels_dir / r
            if not rdir.is_dir():
                problems.append(f"{rdir}: folder of rater '{r}' (listed in dataset.json 'raters') is missing. "
                                "Create it (it may be empty) or remove the rater from 'raters'.")
                continue
            for f in sorted(rdir.iterdir()):
                if f.name.startswith("."):
                    continue
                if f.is_dir() or not f.name.endswith(ending):
                    problems.append(f"{f}: stray file (file_ending is {ending}). Remove it or convert it to {ending}.")
                    continue
                case = f.name[: -len(ending)]
                if case not in cases:
                    problems.append(f"{f}: label without image (no imagesTr/{case}_0000{ending}). "
                                    "Add the image or remove the label.")
                    continue
                label_files[case].append(f)
        for case in sorted(cases):
            if not label_files[case]:
                problems.append(f"{images / (case + '_0000' + ending)}: case '{case}' has no label from any rater. "
                                f"Add at least one labelsTr/<rater>/{case}{ending} or remove the case.")

    # channel counting is skipped where the scan already reported missing/extra channel files
    jobs = [(c, cases[c], label_files[c], None if c in incomplete else num_channels, label_values) for c in sorted(cases)]
    if num_processes <= 1 or len(jobs) < _MIN_CASES_FOR_POOL:
        results = [_check_case_star(j) for j in jobs]
    else:
        with get_context("spawn").Pool(min(num_processes, len(jobs)), initializer=watch_parent,
                                       initargs=(os.getpid(),)) as pool:
            results = pool.map(_check_case_star, jobs, chunksize=max(1, len(jobs) // (4 * num_processes)))
    for r in results:
        problems += r
    return problems


def assert_dataset_integrity(folder: Path, num_processes: int = 1) -> None:
    """Raise DatasetIntegrityError listing every problem; return silently for a valid dataset."""
    problems = verify_dataset_integrity(folder, num_processes)
    if problems:
        raise DatasetIntegrityError(
            f"Dataset {folder} has {len(problems)} problem(s):\n" + "\n".join(f"- {m}" for m in problems)
        )


def main(argv: list[str] | None = None) -> int:
    from diffoseg_auto.paths import raw_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    p = argparse.ArgumentParser(description="Check raw datasets in $diffoseg_raw against the format "
                                            "(documentation/dataset_format.md); exit status 1 on problems.")
    p.add_argument("-d", nargs="+", required=True, help="dataset id(s) or name(s), e.g. 1 or Dataset001_Toy2D")
    p.add_argument("-np", type=int, default=default_num_processes(),
                   help="worker processes (default: $diffoseg_def_n_proc, else min(2, CPUs))")
    a = p.parse_args(argv)
    status = 0
    for d in a.d:
        try:
            folder = raw_root() / resolve_dataset_name(d)
        except UserError as e:  # report every dataset, not only the first bad one
            print(f"ERROR: {e}", file=sys.stderr)
            status = 1
            continue
        problems = verify_dataset_integrity(folder, a.np)
        if problems:
            print(f"{folder}: {len(problems)} problem(s)", file=sys.stderr)
            for m in problems:
                print(f"- {m}", file=sys.stderr)
            status = 1
        else:
            print(f"{folder}: OK")
    return status


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_verify_dataset", main))
