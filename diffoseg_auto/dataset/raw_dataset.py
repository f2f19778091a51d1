"""Reading a raw multi-rater dataset (format: documentation/dataset_format.md).

    DatasetXXX_Name/dataset.json
    DatasetXXX_Name/imagesTr/<case>_<XXXX><file_ending>
    DatasetXXX_Name/labelsTr/<rater>/<case><file_ending>
    DatasetXXX_Name/imagesTs/<case>_<XXXX><file_ending>     (optional)
    DatasetXXX_Name/labelsTs/<rater>/<case><file_ending>    (optional: a labelled held-out test split)

Every accessor of cases and labels takes ``split`` ("Tr" or "Ts"; default "Tr").

A missing labelsTr/<rater>/<case> file means "rater did not annotate this case"; it is
never read as an empty mask. ``rater_mask`` arrays carry that distinction downstream.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffoseg_auto.dataset.dataset_errors import DatasetFormatError
from diffoseg_auto.dataset.label_checks import check_label_array, check_raters_field
from diffoseg_auto.io.image_io import NATURAL_IMAGE_ENDINGS, read_images, read_seg

REQUIRED_FIELDS = ("name", "channel_names", "labels", "numTraining", "file_ending", "raters")
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def load_dataset_json(folder: str | Path) -> dict:
    """Load and minimally validate dataset.json (the full checks are in dataset.integrity)."""
    path = Path(folder) / "dataset.json"
    if not path.is_file():
        raise DatasetFormatError(f"{path}: missing. Every dataset folder needs a dataset.json (see documentation/dataset_format.md).")
    try:
        dj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path}: not valid JSON ({e}). Fix the syntax.") from None
    if not isinstance(dj, dict):
        raise DatasetFormatError(f"{path}: holds a {type(dj).__name__}, not a JSON object with the fields "
                                 f"{list(REQUIRED_FIELDS)}. Fix it (see documentation/dataset_format.md).")
    missing = [k for k in REQUIRED_FIELDS if k not in dj]
    if missing:
        raise DatasetFormatError(f"{path}: missing field(s) {missing}. Add them (see documentation/dataset_format.md).")
    return dj


def list_cases(images_folder: str | Path, file_ending: str, num_channels: int | None = None) -> dict[str, list[Path]]:
    """Map case identifier -> its channel files, sorted by channel index."""
    images_folder = Path(images_folder)
    cases: dict[str, dict[int, Path]] = {}
    for f in sorted(images_folder.iterdir()):
        if not f.name.endswith(file_ending) or f.name.startswith("."):
            continue
        m = _CHANNEL_RE.match(f.name[: -len(file_ending)])
        if m is None:
            continue
        cases.setdefault(m.group("case"), {})[int(m.group("ch"))] = f
    out = {}
    for case, chans in cases.items():
        n = num_channels if num_channels is not None else max(chans) + 1
        missing = [i for i in range(n) if i not in chans]
        if missing:
            raise DatasetFormatError(
                f"{images_folder}: case '{case}' lacks channel file(s) "
                + ", ".join(f"{case}_{i:04d}{file_ending}" for i in missing)
                + ". Every case needs one file per channel in dataset.json's channel_names."
            )
        out[case] = [chans[i] for i in range(n)]
    return out


def extra_channel_files(images_folder: str | Path, file_ending: str, num_channels: int) -> list[Path]:
    """Channel files ``<case>_XXXX`` with XXXX >= num_channels (``list_cases`` leaves them out)."""
    found = []
    for f in sorted(Path(images_folder).iterdir()):
        m = _CHANNEL_RE.match(f.name[: -len(file_ending)]) if f.name.endswith(file_ending) else None
        if m is not None and not f.name.startswith(".") and int(m.group("ch")) >= num_channels:
            found.append(f)
    return found


@dataclass
class RawDataset:
    """A raw dataset folder; cheap to construct (lists files, reads no image)."""

    folder: Path
    dataset_json: dict = field(init=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.dataset_json = load_dataset_json(self.folder)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def raters(self) -> list[str]:
        return check_raters_field(self.dataset_json["raters"], self.folder / "dataset.json")

    @property
    def num_raters(self) -> int:
        return len(self.raters)

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]

    @property
    def labels(self) -> dict[str, int]:
        """Label name -> integer value; 'background' is 0."""
        return {k: int(v) for k, v in self.dataset_json["labels"].items()}

    @property
    def num_classes(self) -> int:
        """Number of classes including background (labels must be 0..K-1)."""
        return max(self.labels.values()) + 1

    @property
    def num_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    @property
    def case_groups(self) -> dict[str, str]:
        return dict(self.dataset_json.get("case_groups", {}))

    def image_files_by_case(self, split: str = "Tr") -> dict[str, list[Path]]:
        folder = self.folder / f"images{split}"
        if not folder.is_dir():
            return {}
        # natural images may hold several channels in one RGB file (documentation/dataset_format.md):
        # infer the files from the folder there; the integrity check verifies the channel count
        natural = self.file_ending in NATURAL_IMAGE_ENDINGS
        return list_cases(folder, self.file_ending, None if natural else self.num_channels)

    @property
    def cases(self) -> list[str]:
        return self.cases_of("Tr")

    def cases_of(self, split: str = "Tr") -> list[str]:
        """The cases of images<split> (sorted; [] when the folder does not exist)."""
        return sorted(self.image_files_by_case(split))

    def labels_folder(self, split: str = "Tr") -> Path:
        return self.folder / f"labels{split}"

    def case_image_files(self, case: str, split: str = "Tr") -> list[Path]:
        """One case's channel files without listing the folder (listing 12,000 files per case made reading a
        large dataset quadratic); natural images: the ``_XXXX`` files present from ``_0000`` on."""
        folder = self.folder / f"images{split}"
        if self.file_ending in NATURAL_IMAGE_ENDINGS:
            files: list[Path] = []
            while (f := folder / f"{case}_{len(files):04d}{self.file_ending}").is_file():
                files.append(f)
            expected = files or [folder / f"{case}_0000{self.file_ending}"]
        else:
            files = expected = [folder / f"{case}_{c:04d}{self.file_ending}" for c in range(self.num_channels)]
        missing = [f.name for f in expected if not f.is_file()]
        if missing:
            raise DatasetFormatError(f"{folder}: case '{case}' lacks channel file(s) {', '.join(missing)}. Every case "
                                     "needs one file per channel in dataset.json's channel_names.")
        return files

    def label_file(self, rater: str | int, case: str, split: str = "Tr") -> Path | None:
        """labels<split>/<rater>/<case><ending>, or None when that rater did not annotate the case."""
        r = self.raters[rater] if isinstance(rater, int) else rater
        f = self.labels_folder(split) / r / f"{case}{self.file_ending}"
        return f if f.is_file() else None

    def rater_mask(self, case: str, split: str = "Tr") -> np.ndarray:
        """Boolean (R,): which raters annotated ``case``."""
        return np.array([self.label_file(r, case, split) is not None for r in self.raters], dtype=bool)

    def load_case(self, case: str, image_files: list[Path] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Image (C,*S) float32, segs (R,*S) uint8 (zeros where missing), rater_mask (R,), props."""
        files = image_files or self.case_image_files(case)
        data, props = read_images(files)
        mask = self.rater_mask(case)
        segs = np.zeros((self.num_raters, *data.shape[1:]), dtype=np.uint8)
        for k, r in enumerate(self.raters):
            if mask[k]:
                s, _ = read_seg(self.label_file(r, case))
                check_label_array(s, self.label_file(r, case), data.shape[1:], self.num_classes)
                segs[k] = s
        return data, segs, mask, props


@functools.lru_cache(maxsize=4)
def _cached_raw_dataset(folder: str, dataset_json_stamp: tuple[int, int]) -> RawDataset:
    return RawDataset(Path(folder))


def worker_raw_dataset(folder: str | Path) -> RawDataset:
    """The RawDataset of ``folder``, parsed once per process while its dataset.json is unchanged: per-case jobs
    (fingerprint, preprocessing) would otherwise parse a 12,000-case dataset.json once per case."""
    try:
        st = (Path(folder) / "dataset.json").stat()
    except OSError:  # let RawDataset name the missing file
        return RawDataset(Path(folder))
    return _cached_raw_dataset(str(folder), (st.st_mtime_ns, st.st_size))


def open_raw_dataset(id_or_name: str | int) -> RawDataset:
    """Resolve an id/name against $diffoseg_raw and open it."""
    from diffoseg_auto.paths import raw_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    folder = raw_root() / resolve_dataset_name(id_or_name)
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder}: raw dataset folder does not exist. Convert or generate the dataset first.")
    return RawDataset(folder)


@dataclass(frozen=True)
class DatasetDescription:
    """The content of a dataset.json (documentation/dataset_format.md), as every converter and the toy generator
    describe their dataset (nnU-Net's generate_dataset_json takes the same, by keyword)."""
    name: str
    channel_names: dict                 # {channel index: name}; the keys are written as strings
    labels: dict                        # {class name: value}, background 0
    raters: list[str]
    num_training: int                   # numTraining
    file_ending: str
    case_groups: dict | None = None     # {case: group}: cases of one group share a fold (written when not empty)
    description: str = ""
    extra: dict = field(default_factory=dict)   # further top-level entries (e.g. numTest, test_split), written last

    def as_json(self) -> dict:
        """The dataset.json dict, keys in the order they are written."""
        dj = {
            "name": self.name,
            "description": self.description,
            "channel_names": {str(k): v for k, v in self.channel_names.items()},
            "labels": self.labels,
            "raters": list(self.raters),
            "numTraining": int(self.num_training),
            "file_ending": self.file_ending,
        }
        if self.case_groups:
            dj["case_groups"] = self.case_groups
        dj.update(self.extra)
        return dj


def write_dataset_json(folder: str | Path, description: DatasetDescription) -> Path:
    """Write ``folder``/dataset.json (used by every converter and the toy generator); returns its path."""
    dj = description.as_json()
    path = Path(folder) / "dataset.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dj, indent=2))
    return path
