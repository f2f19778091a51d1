"""What a training run is, as one value: ``TrainingRequest``.

diffoseg_train's command line (``request_from_args`` in run_training.py) and Python callers (tests, benchmarks)
build it once; ``validate`` reports every problem at once, before any file is touched; ``run_training(request)``
runs it, and each stage's trainer (DiffOSegTrainer or a baseline) is built from it.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path

import torch

from diffoseg_auto.errors import UserError
from diffoseg_auto.plans.plans import StageSchedule
from diffoseg_auto.runtime.device import device_problem
from diffoseg_auto.runtime.precision import PRECISIONS
from diffoseg_auto.training.stage_budget import BUDGET_CLOCKS
from diffoseg_auto.training.trainer_registry import get_trainer_class
from diffoseg_auto.utilities.argument_checks import above, at_least, raise_problems
from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

STAGES = {"both": (1, 2), "1": (1,), "2": (2,)}


@dataclass(frozen=True)
class ScheduleOverrides:
    """Overrides of each stage's planned schedule (None = the plans' value, ConfigurationPlan.schedule)."""

    num_epochs: int | None = None             # --num_epochs
    iterations_per_epoch: int | None = None   # --iterations_per_epoch
    val_iterations: int | None = None         # --val_iterations: validation-loss batches per epoch
    freeze_backbone: bool | None = None       # --freeze_backbone (Stage II only)

    def problems(self) -> list[str | None]:
        return [at_least("--num_epochs", self.num_epochs, 1),
                at_least("--iterations_per_epoch", self.iterations_per_epoch, 1),
                at_least("--val_iterations", self.val_iterations, 0)]

    def apply(self, planned: StageSchedule, stage: int) -> StageSchedule:
        """The stage's schedule with the overrides that are set."""
        given = {"num_epochs": self.num_epochs, "iterations_per_epoch": self.iterations_per_epoch,
                 "val_iterations": self.val_iterations,
                 "freeze_backbone": None if self.freeze_backbone is None else self.freeze_backbone and stage == 2}
        return replace(planned, **{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class TimeBudget:
    """--max_minutes per stage (None = train the scheduled epochs) on the --budget_clock (training/stage_budget.py)."""

    max_minutes: float | None = None
    clock: str = "wall"  # wall | cpu (this process's CPU time: equal compute for methods on a shared machine)

    def problems(self) -> list[str | None]:
        return [above("--max_minutes", self.max_minutes, 0),
                None if self.clock in BUDGET_CLOCKS else
                f"--budget_clock must be one of {', '.join(sorted(BUDGET_CLOCKS))}, got {self.clock!r}."]


@dataclass(frozen=True)
class TrainingRequest:
    """One training run of one fold. ``None`` means "the default":

    - ``stage``: 1, 2 or 'both' (a baseline trainer has one stage: 'both' trains it, 2 is refused);
    - ``trainer``: a -tr name or a dotted path to a DiffOSegTrainer subclass; ``plans``: the plans identifier;
    - ``schedule`` / ``budget``: overrides of the plans' schedule, the time budget per stage;
    - ``device``: None = CUDA when available, else the CPU; ``precision``: None = the plans' training.precision;
    - ``num_workers``: augmentation workers (None = configuration.worker_processes for the device; 0 = in-process,
      reproducible);
    - ``continue_training`` (--c) continues from the latest checkpoint; ``overwrite`` deletes a stage's earlier
      outputs first; without either, a stage with checkpoints is refused; ``only_validation`` (--val) only runs
      the end-of-stage validation of the final checkpoint;
    - ``output_folder``: the trainer folder (None = $diffoseg_results/<dataset>/<trainer>__<plans>__<configuration>).
    """
    dataset: str | int
    configuration: str
    fold: int | str
    _: KW_ONLY  # the options by name only
    stage: str | int = "both"
    trainer: str = "DiffOSegTrainer"
    plans: str = "DiffOSegPlans"
    schedule: ScheduleOverrides = field(default_factory=ScheduleOverrides)
    budget: TimeBudget = field(default_factory=TimeBudget)
    device: str | torch.device | None = None
    precision: str | None = None
    compile_network: bool = False
    num_workers: int | None = None
    seed: int = 12345
    continue_training: bool = False
    only_validation: bool = False
    overwrite: bool = False
    final_validation: bool = True
    output_folder: Path | None = None

    def __post_init__(self) -> None:
        # one stored form of what callers naturally pass: '0' / 0 / 'all' folds, 1 / '1' stages, str paths
        set_field = object.__setattr__
        fold = str(self.fold)
        set_field(self, "fold", int(fold) if fold.isdigit() else fold)
        set_field(self, "stage", str(self.stage))
        if self.output_folder is not None:
            set_field(self, "output_folder", Path(self.output_folder))

    def validate(self) -> None:
        """Every problem of the request at once (one line each, ArgumentError), before any file is touched."""
        raise_problems([
            None if self.fold == "all" or isinstance(self.fold, int) else
            f"fold must be an integer (0, 1, ...) or 'all', got '{self.fold}'.",
            None if self.stage in STAGES else f"--stage must be 1, 2 or both, got '{self.stage}'.",
            *self.schedule.problems(), *self.budget.problems(),
            at_least("--num_workers", self.num_workers, 0),
            device_problem(self.device),
            None if self.precision in (None, *PRECISIONS) else
            f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.",
            self._trainer_problem(),
            "--overwrite and --c exclude each other: continue the run or start it over."
            if self.overwrite and self.continue_training else None,
            "--overwrite and --val exclude each other: --val only validates the trained model."
            if self.overwrite and self.only_validation else None,
        ])

    def _trainer_problem(self) -> str | None:
        try:
            cls = get_trainer_class(self.trainer)
        except UserError as e:
            return str(e)
        if getattr(cls, "is_baseline", False) and self.stage == "2":
            return f"-tr {self.trainer} has a single stage; train it with --stage 1 or both (the default)."
        return None

    def trainer_class(self) -> type:
        return get_trainer_class(self.trainer)

    def stages(self) -> tuple[int, ...]:
        """The stages to run, in order (a baseline's one stage is stage 1)."""
        return (1,) if getattr(self.trainer_class(), "is_baseline", False) else STAGES[self.stage]

    def dataset_name(self) -> str:
        """DatasetXXX_Name (an id is looked up in the data folders; a full name is taken as it is)."""
        return resolve_dataset_name(self.dataset)

    def stage_schedule(self, planned: StageSchedule, stage: int) -> StageSchedule:
        """The plans' schedule of ``stage`` with this request's overrides."""
        return self.schedule.apply(planned, stage)
