"""Reading a prediction folder written by ``diffoseg_predict`` and its multi-rater reference.

    OUT/samples/<case>.npz            key 'samples' uint8 (N, *S); or bit-packed: 'packed' + 'shape'
    OUT/consensus/<case><ending>      Stage I consensus label map
    OUT/raters/<rater>/<case><ending> Stage II prediction for each rater prompt
    OUT/uncertainty/<case><ending>    (not evaluated)

    REF = RAW/DatasetXXX_Name/labelsTr/<rater>/<case><ending>
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from diffoseg_auto.errors import UserError
from diffoseg_auto.evaluation.calibration import samples_disagree
from diffoseg_auto.io.image_io import SUPPORTED_FILE_ENDINGS, file_ending_of, geometry_matches, read_seg
from diffoseg_auto.utilities.file_ops import load_json


class EvaluationInputError(UserError, RuntimeError):
    """A prediction or reference folder that cannot be evaluated (the message names the file)."""


@dataclass
class ReferenceInfo:
    raters: list[str]
    file_ending: str
    num_classes: int | None  # from dataset.json when found


def find_dataset_json(ref_folder: Path, dataset_json: str | Path | None) -> dict | None:
    """The dataset.json given explicitly, else RAW/DatasetXXX/dataset.json next to labelsTr, else None."""
    path = Path(dataset_json) if dataset_json is not None else Path(ref_folder).parent / "dataset.json"
    if not path.is_file():
        if dataset_json is not None:
            raise EvaluationInputError(f"{path}: --dataset_json file does not exist")
        return None
    dj = load_json(path, fix="Fix it (see documentation/dataset_format.md) or pass another one with --dataset_json.")
    if not isinstance(dj, dict) or not isinstance(dj.get("raters", []), list) or not isinstance(dj.get("labels", {}), dict):
        raise EvaluationInputError(f"{path}: not a dataset.json (a JSON object with a 'raters' list and a 'labels' "
                                   "object). Fix it (see documentation/dataset_format.md) or pass another one with --dataset_json.")
    return dj


def reference_info(ref_folder: str | Path, raters: list[str] | None = None, dataset_json: str | Path | None = None,
                   file_ending: str | None = None) -> ReferenceInfo:
    """Rater order (dataset.json, else sorted sub-folder names), file ending and class count of a labelsTr folder."""
    ref_folder = Path(ref_folder)
    if not ref_folder.is_dir():
        raise EvaluationInputError(f"{ref_folder}: reference folder does not exist. Pass RAW/DatasetXXX_Name/labelsTr with -ref.")
    dj = find_dataset_json(ref_folder, dataset_json)
    if raters is None:
        raters = list(dj["raters"]) if dj and "raters" in dj else sorted(p.name for p in ref_folder.iterdir() if p.is_dir())
    if not raters:
        raise EvaluationInputError(f"{ref_folder}: no rater sub-folders. A multi-rater labelsTr holds one folder per rater (labelsTr/<rater>/<case><ending>).")
    missing = [r for r in raters if not (ref_folder / r).is_dir()]
    if missing:
        raise EvaluationInputError(f"{ref_folder}: rater folder(s) {missing} listed in dataset.json do not exist")
    if file_ending is None:
        file_ending = dj.get("file_ending") if dj else None
    if file_ending is None:
        files = [f for r in raters for f in sorted((ref_folder / r).iterdir()) if f.is_file() and not f.name.startswith(".")]
        endings = {file_ending_of(f) for f in files if str(f).lower().endswith(SUPPORTED_FILE_ENDINGS)}
        if len(endings) != 1:
            raise EvaluationInputError(f"{ref_folder}: cannot tell the file ending (found {sorted(endings) or 'none'}). Pass --dataset_json.")
        file_ending = endings.pop()
    num_classes = max(int(v) for v in dj["labels"].values()) + 1 if dj and "labels" in dj else None
    return ReferenceInfo(list(raters), file_ending, num_classes)


def list_predicted_cases(pred_folder: str | Path, file_ending: str) -> list[str]:
    """Cases with a consensus file or a samples file."""
    pred_folder = Path(pred_folder)
    cases = set()
    cons = pred_folder / "consensus"
    if cons.is_dir():
        cases |= {f.name[: -len(file_ending)] for f in cons.iterdir() if f.name.endswith(file_ending) and not f.name.startswith(".")}
    samp = pred_folder / "samples"
    if samp.is_dir():
        cases |= {f.name[: -len(".npz")] for f in samp.iterdir() if f.name.endswith(".npz") and not f.name.startswith(".")}
    return sorted(cases)


def load_samples_npz(path: str | Path) -> np.ndarray:
    """(N, *S) uint8 samples; unpacks the bit-packed form ('packed', 'shape')."""
    path = Path(path)
    fix = "Delete it and predict the case again (diffoseg_predict --save_samples --continue_prediction)."
    try:
        with np.load(path) as z:
            if "packed" in z and "shape" in z:
                shape = tuple(int(s) for s in z["shape"])
                samples = np.unpackbits(z["packed"].ravel(), count=int(np.prod(shape))).reshape(shape).astype(np.uint8)
            elif "samples" in z:
                samples = np.asarray(z["samples"]).astype(np.uint8, copy=False)
            else:
                raise EvaluationInputError(f"{path}: has keys {list(z.keys())}; expected 'samples' or 'packed' + 'shape'. {fix}")
    except EvaluationInputError:
        raise
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as e:
        what = "is empty" if path.stat().st_size == 0 else f"cannot be read: cut short or not an .npz ({type(e).__name__})"
        raise EvaluationInputError(f"{path}: {what}. {fix}") from None
    if samples.ndim < 3 or samples.shape[0] == 0:
        raise EvaluationInputError(f"{path}: samples have shape {list(samples.shape)}, expected (N, *S) label maps. {fix}")
    return samples


def _check_geometry(file: Path, props: dict, ref_props: dict, ref_file: Path) -> None:
    bad = geometry_matches(props, ref_props)
    if bad:
        raise EvaluationInputError(
            f"{file}: geometry ({', '.join(bad)}) differs from the reference {ref_file}. "
            "Predictions must be in the geometry of the raw labels; export them with diffoseg_predict (not in preprocessed space)."
        )


def load_reference(ref_folder: Path, raters: list[str], case: str, file_ending: str) -> tuple[np.ndarray, np.ndarray, dict, Path]:
    """Rater labels (R,*S) uint8 (zeros where missing), rater_mask (R,), props and the first rater file."""
    files = [Path(ref_folder) / r / f"{case}{file_ending}" for r in raters]
    mask = np.array([f.is_file() for f in files])
    if not mask.any():
        raise EvaluationInputError(
            f"case '{case}' has predictions but no reference: none of {', '.join(str(f) for f in files)} exists. "
            "Check -ref (labelsTr of the same dataset) or remove the prediction."
        )
    first = files[int(np.argmax(mask))]
    ref_arr, ref_props = read_seg(first)
    labels = np.zeros((len(raters), *ref_arr.shape), np.uint8)
    for k, f in enumerate(files):
        if mask[k]:
            arr, props = (ref_arr, ref_props) if f == first else read_seg(f)
            _check_geometry(f, props, ref_props, first)
            labels[k] = arr
    return labels, mask, ref_props, first


class CasePrediction(NamedTuple):
    samples: np.ndarray | None  # (N, *S) label maps
    consensus: np.ndarray | None  # (*S)
    rater_predictions: np.ndarray | None  # (R, *S), one per rater prompt
    # (*S) the consensus' foreground probability from consensus/<case>.npz (--save_probabilities): a deterministic
    # baseline's softmax; None without the file (calibration then uses the samples' foreground fraction)
    foreground_probability: np.ndarray | None = None


def load_foreground_probability(pred_folder: Path, case: str, ref_props: dict, ref_file: Path) -> np.ndarray | None:
    """1 - p(background) of consensus/<case>.npz ('probabilities' (K, *S)), or None when the file is absent."""
    f = Path(pred_folder) / "consensus" / f"{case}.npz"
    if not f.is_file():
        return None
    try:
        with np.load(f) as z:
            probs = np.asarray(z["probabilities"], np.float32)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise EvaluationInputError(f"{f}: unreadable consensus probabilities ({type(e).__name__}: {e}). Delete it or "
                                   "predict the case again with --save_probabilities.") from e
    if probs.ndim < 2 or list(probs.shape[1:]) != list(ref_props["shape"]):
        raise EvaluationInputError(f"{f}: probabilities have shape {list(probs.shape)}, expected (K, "
                                   f"{', '.join(map(str, ref_props['shape']))}) as the reference {ref_file}")
    return np.clip(1.0 - probs[0], 0.0, 1.0)


def load_prediction(pred_folder: Path, raters: list[str], case: str, file_ending: str, ref_props: dict,
                    ref_file: Path) -> CasePrediction:
    """What a prediction folder holds of one case (None: absent), checked against the reference geometry."""
    pred_folder = Path(pred_folder)
    samples = None
    sf = pred_folder / "samples" / f"{case}.npz"
    if sf.is_file():
        samples = load_samples_npz(sf)
        if list(samples.shape[1:]) != list(ref_props["shape"]):
            raise EvaluationInputError(f"{sf}: samples have size {list(samples.shape[1:])} but the reference {ref_file} has {ref_props['shape']}")
    consensus = None
    cf = pred_folder / "consensus" / f"{case}{file_ending}"
    if cf.is_file():
        consensus, props = read_seg(cf)
        _check_geometry(cf, props, ref_props, ref_file)
    rater_files = [pred_folder / "raters" / r / f"{case}{file_ending}" for r in raters]
    present = [f.is_file() for f in rater_files]
    rater_predictions = None
    if any(present):
        if not all(present):
            missing = [str(f) for f, p in zip(rater_files, present) if not p]
            raise EvaluationInputError(f"case '{case}': Stage II predictions are missing for some rater prompts: {missing}. Re-run diffoseg_predict with Stage II.")
        preds = []
        for f in rater_files:
            arr, props = read_seg(f)
            _check_geometry(f, props, ref_props, ref_file)
            preds.append(arr)
        rater_predictions = np.stack(preds).astype(np.uint8)
    # the saved softmax is read only where calibration uses it: samples that do not disagree (or no samples)
    soft = (load_foreground_probability(pred_folder, case, ref_props, ref_file)
            if samples is None or not samples_disagree(samples) else None)
    return CasePrediction(samples, consensus, rater_predictions, soft)
