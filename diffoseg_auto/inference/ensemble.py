"""``diffoseg_ensemble -i PRED_A PRED_B [...] -o OUT``: one prediction folder from several (configurations,
trainers or runs), in the layout of diffoseg_predict (export_prediction.py), so that diffoseg_evaluate scores it.

Per case, with every input folder predicting the same cases in the same geometry (else a one-line error):

- ``samples/``: the Stage I samples of all inputs pooled (concatenated), when every input saved them
  (diffoseg_predict --save_samples); without them in every input the ensemble has no samples/ and says so;
- ``consensus/``: the argmax of the mean over the inputs of each input's consensus probabilities: its
  consensus/<case>.npz (--save_probabilities), else the class frequencies of its samples, else the one-hot of its
  consensus label map; ``consensus/<case>.npz`` when every input saved probabilities; ``uncertainty/``: their entropy;
- ``raters/<rater>/``: per rater, the vote of the inputs' label maps (ties -> the lower class, background first:
  the inputs keep no per-rater probabilities); the inputs must predict the same raters;
- ``disagreement/``: the case-triage values (evaluation/disagreement.py) of the pooled samples and the voted raters.

Every input counts once, whatever its number of samples (as nnU-Net averages the softmax of its members).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from diffoseg_auto.errors import UserError
from diffoseg_auto.evaluation.disagreement import case_disagreement, save_case_disagreement
from diffoseg_auto.evaluation.metrics import majority_vote
from diffoseg_auto.evaluation.prediction_folder import list_predicted_cases, load_samples_npz
from diffoseg_auto.inference.export_prediction import mean_one_hot, pack_samples, save_npz, uncertainty_map
from diffoseg_auto.inference.prediction_outputs import SETTINGS_FILE, prepare_output_folder
from diffoseg_auto.io.image_io import file_ending_of, geometry_matches, read_seg, write_image, write_seg
from diffoseg_auto.utilities.command_runner import run_command
from diffoseg_auto.utilities.file_ops import load_json
from diffoseg_auto.utilities.run_lock import RunLock

logger = logging.getLogger(__name__)


class EnsembleError(UserError):
    """Prediction folders that cannot be ensembled (the message names the folder and the fix)."""


class MemberCase(NamedTuple):
    """What one input folder holds of one case (in the input images' geometry)."""
    consensus: np.ndarray  # (*S) label map
    props: dict  # its geometry
    samples: np.ndarray | None  # (N, *S)
    probabilities: np.ndarray | None  # (K, *S) saved consensus probabilities
    raters: dict[str, np.ndarray]  # rater -> (*S)


class EnsembleCase(NamedTuple):
    samples: np.ndarray | None  # pooled (sum of N, *S); None unless every input has samples
    probabilities: np.ndarray  # (K, *S) the mean of the inputs' consensus probabilities
    raters: dict[str, np.ndarray]  # rater -> (*S) the vote of the inputs' maps
    saved_probabilities: bool  # every input saved its probabilities


def member_probabilities(member: MemberCase, num_classes: int) -> np.ndarray:
    """(K, *S) consensus probabilities of one input: saved, else its samples' class frequencies, else its one-hot."""
    if member.probabilities is not None:
        p = np.asarray(member.probabilities, np.float32)
        return np.concatenate([p, np.zeros((num_classes - len(p), *p.shape[1:]), np.float32)]) if len(p) < num_classes else p
    labels = member.samples if member.samples is not None else member.consensus[None]
    return mean_one_hot(labels, num_classes)


def num_classes_of(members: Sequence[MemberCase]) -> int:
    """The classes the inputs know of: saved probability channels, else the largest label + 1 (at least 2)."""
    k = 2
    for m in members:
        k = max(k, len(m.probabilities) if m.probabilities is not None else 0, int(m.consensus.max()) + 1,
                int(m.samples.max()) + 1 if m.samples is not None else 0,
                *(int(r.max()) + 1 for r in m.raters.values()))
    return k


def combine_case(members: Sequence[MemberCase], num_classes: int) -> EnsembleCase:
    """The ensemble of one case (module docstring)."""
    probs = np.mean([member_probabilities(m, num_classes) for m in members], axis=0).astype(np.float32)
    pooled = (np.concatenate([m.samples for m in members]) if all(m.samples is not None for m in members) else None)
    raters = {r: majority_vote(np.stack([m.raters[r] for m in members]), num_classes) for r in members[0].raters}
    return EnsembleCase(pooled, probs, raters, all(m.probabilities is not None for m in members))


def load_member_case(folder: Path, case: str, ending: str, raters: Sequence[str]) -> MemberCase:
    consensus_file = folder / "consensus" / f"{case}{ending}"
    if not consensus_file.is_file():
        raise EnsembleError(f"{consensus_file}: missing. Every input must hold the consensus of every case; "
                            "re-run diffoseg_predict for this case (--continue_prediction).")
    consensus, props = read_seg(consensus_file)
    shape = list(props["shape"])

    def checked(arr: np.ndarray, file: Path) -> np.ndarray:
        """(M, *S) arrays of the case: S must be the consensus' size."""
        if list(arr.shape[1:]) != shape:
            raise EnsembleError(f"{file}: size {list(arr.shape[1:])} differs from {consensus_file} ({shape}); "
                                "the folder is damaged: predict this case again.")
        return arr

    sf, pf = folder / "samples" / f"{case}.npz", folder / "consensus" / f"{case}.npz"
    samples = checked(load_samples_npz(sf), sf) if sf.is_file() else None
    probabilities = None
    if pf.is_file():
        with np.load(pf) as z:
            probabilities = checked(np.asarray(z["probabilities"], np.float32), pf)
    per_rater = {}
    for r in raters:
        f = folder / "raters" / r / f"{case}{ending}"
        if not f.is_file():
            raise EnsembleError(f"{f}: missing. Re-run diffoseg_predict for this case (--continue_prediction).")
        arr, p = read_seg(f)
        if geometry_matches(p, props):
            raise EnsembleError(f"{f}: geometry differs from {consensus_file}; the folder is damaged: predict again.")
        per_rater[r] = arr
    return MemberCase(consensus, props, samples, probabilities, per_rater)


def folder_ending(folder: Path) -> str:
    """The file ending of a prediction folder's consensus label maps."""
    files = sorted(f for f in (folder / "consensus").glob("*") if f.is_file() and not f.name.endswith(".npz")
                   and not f.name.startswith(".")) if (folder / "consensus").is_dir() else []
    if not files:
        raise EnsembleError(f"{folder}: no consensus/<case><ending> files. Give folders written by diffoseg_predict (-i).")
    return file_ending_of(files[0])


def folder_raters(folder: Path) -> list[str]:
    d = folder / "raters"
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def check_inputs(inputs: Sequence[Path], output: Path) -> tuple[str, list[str], list[str]]:
    """(file ending, cases, raters) that every input shares; one line naming the first input that differs."""
    if len(inputs) < 2:
        raise EnsembleError(f"-i: give two or more prediction folders to ensemble, got {len(inputs)}.")
    for f in inputs:
        if not f.is_dir():
            raise EnsembleError(f"{f}: prediction folder does not exist (-i).")
        if f.resolve() == output.resolve():
            raise EnsembleError(f"{output}: the output folder must differ from every input folder (-o).")
    ending = folder_ending(inputs[0])
    cases, raters = list_predicted_cases(inputs[0], ending), folder_raters(inputs[0])
    for f in inputs[1:]:
        if folder_ending(f) != ending:
            raise EnsembleError(f"{f}: files end in {folder_ending(f)}, {inputs[0]}'s in {ending}; ensemble "
                                "predictions of the same images.")
        other = list_predicted_cases(f, ending)
        if other != cases:
            lacking, extra = sorted(set(cases) - set(other)), sorted(set(other) - set(cases))
            raise EnsembleError(f"{f}: predicts other cases than {inputs[0]} (missing: {lacking[:5] or 'none'}; "
                                f"extra: {extra[:5] or 'none'}). Predict the same input folder with every member.")
        if folder_raters(f) != raters:
            raise EnsembleError(f"{f}: has per-rater predictions for {folder_raters(f)}, {inputs[0]} for {raters}. "
                                "Predict the same raters with every member (--raters).")
    return ending, cases, raters


def write_ensemble_case(out: Path, case: str, ending: str, ens: EnsembleCase, props: dict) -> None:
    """The ensemble's files of one case, in the layout of export_prediction."""
    k = len(ens.probabilities)
    write_seg(np.argmax(ens.probabilities, 0).astype(np.uint8), props, out / "consensus" / f"{case}{ending}")
    if ens.saved_probabilities:
        save_npz(out / "consensus" / f"{case}.npz", probabilities=ens.probabilities.astype(np.float16))
    write_image(uncertainty_map(ens.probabilities, ending), props, out / "uncertainty" / f"{case}{ending}")
    for r, labels in ens.raters.items():
        write_seg(labels, props, out / "raters" / r / f"{case}{ending}")
    if ens.samples is not None:
        save_npz(out / "samples" / f"{case}.npz", **pack_samples(ens.samples, k))
    rater_maps = np.stack(list(ens.raters.values())) if ens.raters else None
    save_case_disagreement(out, case, case_disagreement(ens.samples, rater_maps, k))


def ensemble_folders(inputs: Sequence[str | Path], output: str | Path, overwrite: bool = False) -> list[str]:
    """Write the ensemble of ``inputs`` into ``output`` (module docstring); returns the cases."""
    inputs, out = [Path(f) for f in inputs], Path(output)
    ending, cases, raters = check_inputs(inputs, out)
    settings = {"ensemble_of": [str(f.resolve()) for f in inputs],
                "member_settings": [load_json(f / SETTINGS_FILE) if (f / SETTINGS_FILE).is_file() else None
                                    for f in inputs]}
    with RunLock(out, "diffoseg_ensemble"):
        prepare_output_folder(out, settings, continue_prediction=False, overwrite=overwrite)
        pooled = True
        for case in cases:
            members = [load_member_case(f, case, ending, raters) for f in inputs]
            for f, m in zip(inputs[1:], members[1:]):
                if geometry_matches(m.props, members[0].props):
                    raise EnsembleError(f"{f / 'consensus' / (case + ending)}: geometry "
                                        f"({', '.join(geometry_matches(m.props, members[0].props))}) differs from "
                                        f"{inputs[0]}'s; ensemble predictions of the same images.")
            ens = combine_case(members, num_classes_of(members))
            pooled &= ens.samples is not None
            write_ensemble_case(out, case, ending, ens, members[0].props)
    if not pooled:
        logger.warning(f"{out}: no samples/ for some cases (an input lacks them); predict every member with "
                       "--save_samples to pool the Stage I samples.")
    return cases


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Ensemble several diffoseg_predict output folders into one: pooled Stage I "
                                            "samples, averaged consensus probabilities, voted per-rater predictions.")
    p.add_argument("-i", nargs="+", required=True, help="two or more prediction folders of the same images "
                                                        "(members predicted with --save_samples pool their samples)")
    p.add_argument("-o", required=True, help="output folder (the layout of diffoseg_predict)")
    p.add_argument("--overwrite", action="store_true", help="delete an earlier prediction's outputs in -o first")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cases = ensemble_folders(args.i, args.o, overwrite=args.overwrite)
    print(f"ensembled {len(args.i)} folders, {len(cases)} case(s): {args.o}")


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_ensemble", main))
