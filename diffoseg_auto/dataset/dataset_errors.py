"""The error of a raw dataset that does not follow documentation/dataset_format.md, in its own module:
raw_dataset raises it and label_checks derives its label errors from it, so neither of the two imports the
other's error (no import circle)."""
from __future__ import annotations

from diffoseg_auto.errors import UserError


class DatasetFormatError(UserError, RuntimeError):
    """A dataset folder, dataset.json or case file that breaks the dataset format (the message names it)."""
