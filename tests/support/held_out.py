"""A held-out test split made from a toy dataset: some cases moved from imagesTr/labelsTr to imagesTs/labelsTs, as
diffoseg_convert_lidc writes the LIDC test patients."""
from __future__ import annotations

import json
from pathlib import Path

from diffoseg_auto.dataset.raw_dataset import RawDataset


def move_to_test_split(raw: Path, cases: list[str], raters_are_slots: bool = True) -> None:
    """Move ``cases`` (images and every rater's labels) to imagesTs/labelsTs and state the split in dataset.json."""
    ds = RawDataset(raw)
    images = ds.image_files_by_case("Tr")
    for case in cases:
        for f in images[case]:
            (raw / "imagesTs").mkdir(exist_ok=True)
            f.rename(raw / "imagesTs" / f.name)
        for r in ds.raters:
            (raw / "labelsTs" / r).mkdir(parents=True, exist_ok=True)
            label = ds.label_file(r, case)
            if label is not None:
                label.rename(raw / "labelsTs" / r / label.name)
    dj = dict(ds.dataset_json)
    dj["case_groups"] = {c: g for c, g in dj.get("case_groups", {}).items() if c not in cases}
    dj.update(numTraining=dj["numTraining"] - len(cases), numTest=len(cases), raters_are_slots=raters_are_slots,
              test_split=f"the toy cases {', '.join(cases)} (imagesTs/labelsTs)")
    (raw / "dataset.json").write_text(json.dumps(dj, indent=2))
