"""The state of a prediction output folder: which cases are finished, and whether the folder may be written.

A folder holding another run's outputs is never mixed silently with a new run: ``--continue_prediction``
finishes a run with the same settings (finished cases are skipped), ``--overwrite`` deletes what an
earlier prediction wrote (only the files diffoseg_predict and diffoseg_evaluate make; anything else
the user put there stays).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from diffoseg_auto.errors import UserError
from diffoseg_auto.evaluation.disagreement import DISAGREEMENT_FOLDER, disagreement_file
from diffoseg_auto.utilities.file_ops import load_json, save_json
from diffoseg_auto.utilities.temp_files import remove_stale_temp_files

SETTINGS_FILE = "prediction_settings.json"
# everything a prediction (and its evaluation) writes into the output folder
DERIVED = ("consensus", "uncertainty", "raters", "samples", DISAGREEMENT_FOLDER, SETTINGS_FILE, "summary.json",
           "summary_per_case.csv")


class OutputFolderInUseError(UserError):
    """The output folder holds another prediction's files."""


class PredictionIncompleteError(UserError):
    """Some cases failed; the others were written."""


def expected_files(output_folder: str | Path, case: str, file_ending: str, raters: Sequence[str],
                   save_probabilities: bool, save_samples: bool) -> list[Path]:
    """The files a finished case has (layout: export_prediction)."""
    out = Path(output_folder)
    files = [out / "consensus" / f"{case}{file_ending}", out / "uncertainty" / f"{case}{file_ending}"]
    files += [out / "raters" / r / f"{case}{file_ending}" for r in raters] + [disagreement_file(out, case)]
    if save_probabilities:
        files.append(out / "consensus" / f"{case}.npz")
    if save_samples:
        files.append(out / "samples" / f"{case}.npz")
    return files


def _derived_entries(output_folder: Path) -> list[Path]:
    return [output_folder / n for n in DERIVED if (output_folder / n).exists()]


def prepare_output_folder(output_folder: str | Path, settings: dict, continue_prediction: bool, overwrite: bool) -> None:
    """Create or check the output folder and record ``settings``; raises when it holds another run's files."""
    out = Path(output_folder)
    earlier = _derived_entries(out) if out.is_dir() else []
    if earlier and overwrite:
        for p in earlier:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    elif earlier and continue_prediction:
        recorded = load_json(out / SETTINGS_FILE) if (out / SETTINGS_FILE).is_file() else None
        if recorded != settings:
            diffs = (["no prediction_settings.json"] if recorded is None else
                     [f"{k}: {recorded.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(recorded) | set(settings))
                      if recorded.get(k) != settings.get(k)])
            raise OutputFolderInUseError(
                f"{out}: --continue_prediction, but the earlier run there used other settings ({'; '.join(diffs)}). "
                "Use the same settings, another output folder, or --overwrite.")
    elif earlier:
        raise OutputFolderInUseError(
            f"{out}: holds files of an earlier prediction ({', '.join(p.name for p in earlier)}). Pass "
            "--continue_prediction to finish that run, --overwrite to replace it, or choose another output folder (-o).")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out)
    save_json(settings, out / SETTINGS_FILE)


def failure_report(failures: dict[str, str], num_cases: int, output_folder: str | Path) -> PredictionIncompleteError:
    lines = [f"{len(failures)} of {num_cases} case(s) failed; the others were written to {output_folder}. "
             "Fix these inputs and re-run with --continue_prediction:"]
    lines += [f"  {case}: {why}" for case, why in failures.items()]
    return PredictionIncompleteError("\n".join(lines))
