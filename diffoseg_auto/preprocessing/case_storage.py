"""On-disk format of one preprocessed case (contract between preprocessing, training, prediction).

    <preprocessed>/<DatasetXXX_Name>/<data_identifier>/<case>.npz   data (C,*S) float32,
                                                                    seg (R,*S) uint8 (0 where rater missing),
                                                                    rater_mask (R,) bool
    <preprocessed>/<DatasetXXX_Name>/<data_identifier>/<case>.pkl   properties (geometry to undo, class_locations)

npz is compressed on disk; ``unpack_dataset`` writes <case>_data.npy / <case>_seg.npy once so
that training reads patches through memory maps instead of decompressing whole volumes.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np

from diffoseg_auto.errors import CorruptFileError
from diffoseg_auto.utilities.file_ops import atomic_write

_ARRAYS = ("data", "seg", "rater_mask")
# what np.load and unpickling raise for an empty, cut-short or foreign file
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, pickle.UnpicklingError, AttributeError,
                ImportError, IndexError, TypeError)


def _bad_case(path: Path, problem: str) -> CorruptFileError:
    case = path.name.split(".")[0].removesuffix("_data").removesuffix("_seg").removesuffix("_rater_mask")
    return CorruptFileError(f"{path}: {problem}. Delete {case}.npz and {case}.pkl (and {case}_*.npy) in {path.parent} "
                            "and run diffoseg_preprocess again: it preprocesses the missing cases only.")


def _checked(path: Path, data: np.ndarray, seg: np.ndarray, rater_mask: np.ndarray) -> tuple:
    """The three arrays of a case, or an error naming the file when their shapes do not fit together."""
    if data.ndim < 3 or seg.ndim != data.ndim or seg.shape[1:] != data.shape[1:] or rater_mask.shape != seg.shape[:1]:
        raise _bad_case(path, f"data {data.shape}, seg {seg.shape} and rater_mask {rater_mask.shape} do not fit "
                              "((C, *S), (R, *S), (R,))")
    return data, seg, rater_mask


def save_case(folder: str | Path, case: str, data: np.ndarray, seg: np.ndarray, rater_mask: np.ndarray, properties: dict) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if seg.shape[1:] != data.shape[1:]:
        raise ValueError(f"{case}: seg spatial shape {seg.shape[1:]} != data {data.shape[1:]}")
    if seg.shape[0] != len(rater_mask):
        raise ValueError(f"{case}: seg has {seg.shape[0]} raters, rater_mask {len(rater_mask)}")

    def _npz(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez_compressed(fh, data=data.astype(np.float32, copy=False), seg=seg.astype(np.uint8, copy=False),
                                rater_mask=np.asarray(rater_mask, dtype=bool))

    atomic_write(folder / f"{case}.npz", _npz)
    atomic_write(folder / f"{case}.pkl", lambda p: p.write_bytes(pickle.dumps(properties)))


def load_properties(folder: str | Path, case: str) -> dict:
    path = Path(folder) / f"{case}.pkl"
    try:
        props = pickle.loads(path.read_bytes())
    except _READ_ERRORS as e:
        raise _bad_case(path, f"cannot read the case's properties ({type(e).__name__})") from None
    if not isinstance(props, dict):
        raise _bad_case(path, f"holds a {type(props).__name__}, not the case's properties")
    return props


def _read_npz(npz: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        with np.load(npz) as z:
            arrays = tuple(np.asarray(z[k]) for k in _ARRAYS)
    except _READ_ERRORS as e:
        raise _bad_case(npz, f"cannot read this preprocessed case ({type(e).__name__}: empty, cut short or not "
                             f"an .npz with {', '.join(_ARRAYS)})") from None
    return _checked(npz, *arrays)


def list_preprocessed_cases(folder: str | Path) -> list[str]:
    """Complete cases (.npz and .pkl); hidden files, such as the temporaries of a killed write, never count."""
    return sorted(p.stem for p in Path(folder).glob("*.npz") if not p.name.startswith(".") and p.with_suffix(".pkl").is_file())


def unpack_case(folder: str | Path, case: str) -> None:
    folder = Path(folder)
    npz = folder / f"{case}.npz"
    targets = {k: folder / f"{case}_{k}.npy" for k in ("data", "seg", "rater_mask")}
    if all(t.is_file() and t.stat().st_mtime >= npz.stat().st_mtime for t in targets.values()):
        return
    for (k, t), a in zip(targets.items(), _read_npz(npz)):
        atomic_write(t, lambda p, a=a: _save_npy(p, a))


def _save_npy(p: Path, a: np.ndarray) -> None:
    with open(p, "wb") as fh:
        np.save(fh, a)


def unpack_dataset(folder: str | Path) -> None:
    """Unpack every case; each case's properties are read here too, so that a broken .pkl is reported by name
    before training starts (the data loader's workers read them later)."""
    for case in list_preprocessed_cases(folder):
        unpack_case(folder, case)
        load_properties(folder, case)


def load_case(folder: str | Path, case: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(data, seg, rater_mask, properties); memory-mapped when unpacked .npy files exist."""
    folder = Path(folder)
    npy = folder / f"{case}_data.npy"
    if mmap and npy.is_file():
        try:
            data = np.load(npy, mmap_mode="r")
            seg = np.load(folder / f"{case}_seg.npy", mmap_mode="r")
            rater_mask = np.load(folder / f"{case}_rater_mask.npy")
        except _READ_ERRORS as e:
            raise _bad_case(npy, f"cannot read the unpacked case ({type(e).__name__})") from None
        data, seg, rater_mask = _checked(npy, data, seg, rater_mask)
    else:
        data, seg, rater_mask = _read_npz(folder / f"{case}.npz")
    return data, seg, rater_mask.astype(bool), load_properties(folder, case)
