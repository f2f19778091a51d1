"""diffoseg_predict: sample Stage I consensus / uncertainty and Stage II per-rater segmentations for a folder
(or predict it with a baseline), in the input's geometry.

The command line and ``predict_from_folder`` only build a ``PredictionRequest``; ``run_prediction``
(prediction_run.py) runs it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from diffoseg_auto.inference.prediction_request import PredictionRequest
from diffoseg_auto.inference.prediction_run import run_prediction
from diffoseg_auto.results_layout import CHECKPOINT_FINAL
from diffoseg_auto.runtime.device import DEVICE_CHOICES
from diffoseg_auto.runtime.precision import PRECISIONS
from diffoseg_auto.utilities.command_runner import run_command


def predict_from_folder(input_folder: str | Path, output_folder: str | Path, dataset: str | int, configuration: str,
                        folds: Sequence[int | str], **options: Any) -> list[str]:
    """Predict every case of ``input_folder`` into ``output_folder``; returns the case identifiers.

    A convenience for ``run_prediction(PredictionRequest(input_folder, output_folder, dataset, configuration, folds,
    **options))``: ``options`` are the request's other fields, by keyword (trainer, plans, num_samples,
    sampling_steps, raters, save_samples, device, overwrite, ...; their meaning and defaults: PredictionRequest).
    """
    return run_prediction(PredictionRequest(input_folder, output_folder, dataset, configuration, folds, **options))


# ------------------------------------------------------------------ command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Sample DiffOSeg predictions for a folder of images: Stage I consensus and "
                                            "uncertainty, Stage II per-rater segmentations, in the input geometry.")
    p.add_argument("-i", required=True, help="input folder, raw layout <case>_<XXXX><ending>")
    p.add_argument("-o", required=True, help="output folder (consensus/, uncertainty/, raters/<rater>/, samples/)")
    p.add_argument("-d", required=True, help="dataset id or name the model was trained on")
    p.add_argument("-c", required=True, help="configuration (2d, 3d_fullres, ...)")
    p.add_argument("-f", nargs="+", required=True, help="fold(s) to ensemble, e.g. -f 0 1 2 3 4 (or 'all')")
    p.add_argument("-tr", default="DiffOSegTrainer",
                   help="trainer name (default: DiffOSegTrainer); a baseline (ConsensusUNetTrainer, MultiHeadUNetTrainer, "
                        "ProbUNetTrainer) is predicted by sliding windows, --sampling_steps and --rater_num_samples do "
                        "not apply to it")
    p.add_argument("-p", default="DiffOSegPlans", help="plans identifier (default: DiffOSegPlans)")
    p.add_argument("--num_samples", type=int, default=None, help="Stage I samples per case (default: plans diffusion.num_samples)")
    p.add_argument("--sampling_steps", type=int, default=None, help="reverse steps S (default: plans diffusion.sampling_steps)")
    p.add_argument("--raters", nargs="+", default=None,
                   help="Stage II prompts: 'all' (default when a Stage II model exists), 'none', or rater names")
    p.add_argument("--rater_num_samples", type=int, default=None,
                   help="Stage II samples per rater; the rater's mask is the argmax of their mean one-hot "
                        "(default: plans stage2.num_samples_per_rater)")
    p.add_argument("--save_probabilities", action="store_true", help="also write consensus/<case>.npz (float16 probabilities)")
    p.add_argument("--save_samples", action="store_true", help="also write samples/<case>.npz (all Stage I samples)")
    p.add_argument("-chk", default=CHECKPOINT_FINAL, help=f"checkpoint file name (default: {CHECKPOINT_FINAL})")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding-window step as a fraction of the patch (default: 0.5)")
    p.add_argument("--disable_tta", action="store_true",
                   help="no mirroring test-time augmentation (default: the plans' inference.use_mirroring for DiffOSeg, planned "
                        "off; on for the baselines)")
    p.add_argument("-device", default=None,
                   help=f"{', '.join(DEVICE_CHOICES)} or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="network autocast (default: the plans' inference.precision, 'auto' = bf16 where native, else fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the denoiser (slow start; pays on GPUs)")
    p.add_argument("-npp", type=int, default=None, help="preprocessing processes (default: on a CUDA device min(cores - 1, "
                   "12, memory / 3 GB), else min(2, CPUs))")
    p.add_argument("-nps", type=int, default=None, help="export processes (default: as -npp)")
    p.add_argument("--seed", type=int, default=0, help="random seed; outputs are reproducible per case (default: 0)")
    p.add_argument("--continue_prediction", action="store_true",
                   help="finish an earlier run into -o with the same settings: cases with all outputs are skipped")
    p.add_argument("--overwrite", action="store_true", help="delete an earlier prediction's outputs in -o first")
    return p


def request_from_args(args: argparse.Namespace) -> PredictionRequest:
    """The PredictionRequest of diffoseg_predict's parsed arguments."""
    return PredictionRequest(args.i, args.o, args.d, args.c, args.f, trainer=args.tr, plans=args.p,
                             checkpoint_name=args.chk, num_samples=args.num_samples, sampling_steps=args.sampling_steps,
                             raters=args.raters, rater_num_samples=args.rater_num_samples,
                             save_probabilities=args.save_probabilities, save_samples=args.save_samples,
                             step_size=args.step_size, use_mirroring=False if args.disable_tta else None,
                             device=args.device, precision=args.precision, compile_network=args.compile,
                             num_processes_preprocessing=args.npp, num_processes_export=args.nps, seed=args.seed,
                             continue_prediction=args.continue_prediction, overwrite=args.overwrite)


def main(argv: Sequence[str] | None = None) -> None:
    run_prediction(request_from_args(build_parser().parse_args(argv)))


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_predict", main))
