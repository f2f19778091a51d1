"""What a prediction run is, as one value: ``PredictionRequest``.

diffoseg_predict's command line and Python callers (``predict_from_folder``, the benchmarks) build it
once; ``validate`` checks it in one place, before any file is touched, and ``run_prediction``
(prediction_run.py) runs it, whatever method the model folder holds.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path
import torch

from diffoseg_auto.configuration import worker_processes
from diffoseg_auto.errors import UserError
from diffoseg_auto.results_layout import CHECKPOINT_FINAL, trainer_folder
from diffoseg_auto.runtime.device import device_problem, resolve_device
from diffoseg_auto.runtime.precision import PRECISIONS
from diffoseg_auto.utilities.argument_checks import at_least, raise_problems
from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name


class PredictionError(UserError, RuntimeError):
    """A prediction that cannot be run as requested (the message says what to change)."""


@dataclass(frozen=True)
class PredictionRequest:
    """One prediction run. ``None`` means "the model's default" (resolved when the model is loaded):

    - ``folds``: fold numbers (ints or digit strings) or 'all'; the ensemble of their checkpoints ``checkpoint_name``;
    - ``trainer`` / ``plans`` / ``configuration`` name the model folder $diffoseg_results/<dataset>/<trainer>__<plans>__<configuration>
      unless ``model_folder`` is given; the method (DiffOSeg or a baseline) is the one its checkpoints were trained with;
    - ``num_samples`` / ``sampling_steps`` / ``rater_num_samples``: the plans' diffusion.num_samples / sampling_steps,
      stage2.num_samples_per_rater (``sampling_steps`` and ``rater_num_samples`` do not apply to a baseline);
    - ``raters``: None = every rater when a per-rater model exists (a Stage II, or any baseline), else none;
      'all', 'none' or rater names;
    - ``use_mirroring``: None = the plans' inference.use_mirroring for DiffOSeg (planned off: results.md), on for the
      deterministic baselines (their mirroring costs 4x once, not 4x per step and sample);
    - ``device``: None = CUDA when available, else the CPU; ``precision`` / ``compile_network``: DiffOSeg's denoiser
      (None = the plans' inference.precision);
    - ``num_processes_preprocessing`` / ``num_processes_export``: worker processes (None = configuration.worker_processes:
      on a CUDA device from the cores and memory, else min(2, CPUs));
    - ``continue_prediction`` finishes an earlier run with the same settings in ``output_folder``; ``overwrite``
      deletes an earlier run's outputs first (without either, such a folder is refused).
    """
    input_folder: Path
    output_folder: Path
    dataset: str | int
    configuration: str
    folds: tuple[int | str, ...]
    _: KW_ONLY  # the options by name only: 20 positional arguments were the old problem
    trainer: str = "DiffOSegTrainer"
    plans: str = "DiffOSegPlans"
    model_folder: Path | None = None
    checkpoint_name: str = CHECKPOINT_FINAL
    num_samples: int | None = None
    sampling_steps: int | None = None
    raters: tuple[str, ...] | None = None
    rater_num_samples: int | None = None
    save_probabilities: bool = False
    save_samples: bool = False
    step_size: float = 0.5
    use_mirroring: bool | None = None
    device: str | torch.device | None = None
    precision: str | None = None
    compile_network: bool = False
    num_processes_preprocessing: int | None = None
    num_processes_export: int | None = None
    seed: int = 0
    continue_prediction: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        # one stored form of what callers naturally pass: str paths, a list of folds, '-f' strings, one rater name
        set_field = object.__setattr__
        set_field(self, "input_folder", Path(self.input_folder))
        set_field(self, "output_folder", Path(self.output_folder))
        if self.model_folder is not None:
            set_field(self, "model_folder", Path(self.model_folder))
        folds = [self.folds] if isinstance(self.folds, (int, str)) else list(self.folds)
        set_field(self, "folds", tuple(int(f) if isinstance(f, str) and f.isdigit() else f for f in folds))
        if self.raters is not None:
            set_field(self, "raters", (self.raters,) if isinstance(self.raters, str) else tuple(self.raters))

    def validate(self) -> None:
        """Every problem of the request at once (one line each, ArgumentError), before any file is touched."""
        bad_folds = [f for f in self.folds if f != "all" and not (isinstance(f, int) and f >= 0)]
        same_folder = self.input_folder.resolve() == self.output_folder.resolve()
        raise_problems([
            device_problem(self.device),
            at_least("--num_samples", self.num_samples, 1), at_least("--sampling_steps", self.sampling_steps, 1),
            at_least("--rater_num_samples", self.rater_num_samples, 1),
            None if 0 < self.step_size <= 1 else f"-step_size must be in (0, 1], got {self.step_size}.",
            at_least("-npp", self.num_processes_preprocessing, 1), at_least("-nps", self.num_processes_export, 1),
            None if self.precision in (None, *PRECISIONS) else
            f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.",
            f"-f takes fold numbers or 'all', got {bad_folds}." if bad_folds else None,
            None if self.folds else "-f: give at least one fold (e.g. -f 0, or -f 0 1 2 3 4).",
            "--continue_prediction and --overwrite exclude each other." if self.continue_prediction and self.overwrite else None,
            None if self.input_folder.is_dir() else f"{self.input_folder}: input folder does not exist (-i).",
            f"{self.output_folder}: output folder must differ from the input folder (-o)." if same_folder else None,
        ])

    def locate_model(self) -> tuple[str, Path]:
        """(DatasetXXX_Name, model folder) of the request; an unknown dataset is a one-line DatasetNotFoundError."""
        dataset_name = resolve_dataset_name(self.dataset)
        folder = self.model_folder or trainer_folder(dataset_name, self.trainer, self.plans, self.configuration)
        return dataset_name, folder

    def worker_counts(self) -> tuple[int, int]:
        """(preprocessing, export) worker processes; the default follows the machine (configuration.worker_processes)."""
        npp, nps = self.num_processes_preprocessing, self.num_processes_export
        default = worker_processes(resolve_device(self.device).type)
        return (default if npp is None else int(npp), default if nps is None else int(nps))

