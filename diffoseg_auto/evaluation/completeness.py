"""What an evaluation could not compare: reference cases without a prediction, predicted cases without
a reference, and raters that were predicted but have no reference folder.

Evaluation scores what it finds; these lists make the gaps visible (and ``--strict`` makes them fatal).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from diffoseg_auto.errors import UserError

_SHOWN = 20


class EvaluationIncompleteError(UserError):
    """--strict: predictions, references or raters are missing."""


def _names(items: Sequence[str]) -> str:
    return ", ".join(items[:_SHOWN]) + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


@dataclass
class MissingInputs:
    predictions: list[str] = field(default_factory=list)  # reference cases nobody predicted
    references: list[str] = field(default_factory=list)   # predicted cases without any reference label
    raters: list[str] = field(default_factory=list)       # predicted raters without a reference folder

    def any(self) -> bool:
        return bool(self.predictions or self.references or self.raters)

    def lines(self, ref_folder: Path, pred_folder: Path) -> list[str]:
        out = []
        if self.predictions:
            out.append(f"{pred_folder}: no prediction for {len(self.predictions)} reference case(s): {_names(self.predictions)}")
        if self.references:
            out.append(f"{ref_folder}: no reference for {len(self.references)} predicted case(s) (not scored): "
                       f"{_names(self.references)}")
        if self.raters:
            out.append(f"{ref_folder}: no folder for predicted rater(s) {self.raters} (not scored)")
        return out

    def as_dict(self) -> dict:
        return {"predictions": self.predictions, "references": self.references, "raters": self.raters}


def _cases_in(folder: Path, file_ending: str) -> set[str]:
    if not folder.is_dir():
        return set()
    return {f.name[: -len(file_ending)] for f in folder.iterdir() if f.name.endswith(file_ending) and not f.name.startswith(".")}


def find_missing(ref_folder: str | Path, pred_folder: str | Path, raters: Sequence[str], file_ending: str,
                 predicted_cases: Sequence[str], expected_cases: Sequence[str] | None = None) -> MissingInputs:
    """``expected_cases``: the cases a complete prediction holds (a fold's held-out cases scored against the whole
    labelsTr); None: every reference case."""
    ref_folder, pred_folder = Path(ref_folder), Path(pred_folder)
    reference_cases = set().union(*(_cases_in(ref_folder / r, file_ending) for r in raters))
    predicted_raters = sorted(p.name for p in (pred_folder / "raters").iterdir()
                              if p.is_dir() and not p.name.startswith(".")) if (pred_folder / "raters").is_dir() else []
    expected = reference_cases if expected_cases is None else set(expected_cases)
    return MissingInputs(predictions=sorted(expected - set(predicted_cases)),
                         references=sorted(set(predicted_cases) - reference_cases),
                         raters=[r for r in predicted_raters if r not in raters])
