"""The one owner of the results-folder layout (as nnU-Net's file_path_utilities):

    $diffoseg_results/<DatasetXXX_Name>/<Trainer>__<Plans>__<config>/      trainer folder
        fold_<f>/checkpoint_final.pth                                      the fold's final model
        fold_<f>/stage<s>/checkpoint_{latest,best,final}.pth
        fold_<f>/stage<s>/validation/summary.json (+ predictions)
        fold_<f>/val_predictions/                                          diffoseg_predict on the fold's
                                                                           held-out cases (method comparison)
        fold_all/test_predictions/                                         diffoseg_predict on the dataset's
                                                                           test cases (imagesTs, held-out test)
        fold_all/test_learning_curve/<checkpoint stem>/                    the same for a learning-curve point

Training, prediction, evaluation and the benchmark ask this module for every path in there;
no other module spells these names.
"""
from __future__ import annotations

from pathlib import Path

from diffoseg_auto.paths import results_root

CHECKPOINT_FINAL = "checkpoint_final.pth"
CHECKPOINT_LATEST = "checkpoint_latest.pth"
CHECKPOINT_BEST = "checkpoint_best.pth"
# diffoseg_add_rater: the Stage II model with the added experts (next to the original, which stays untouched)
ADDED_RATERS_CHECKPOINT = "checkpoint_added_raters.pth"
RATER_LIST = "raters.json"
VALIDATION = "validation"
VAL_PREDICTIONS = "val_predictions"
TEST_PREDICTIONS = "test_predictions"
TEST_LEARNING_CURVE = "test_learning_curve"
SUMMARY = "summary.json"
_SEP = "__"  # Trainer__Plans__config
_FOLD_PREFIX = "fold_"


def trainer_folder_name(trainer: str, plans: str, configuration: str) -> str:
    return _SEP.join((trainer, plans, configuration))


def parse_trainer_folder_name(name: str) -> tuple[str, str, str]:
    """'<Trainer>__<Plans>__<config>' -> (trainer, plans, config); another name -> (name, '', '')."""
    parts = name.split(_SEP)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else (name, "", "")


def trainer_folder(dataset_name: str, trainer: str, plans: str, configuration: str,
                   root: str | Path | None = None) -> Path:
    """<root or $diffoseg_results>/<dataset>/<Trainer>__<Plans>__<config>"""
    base = Path(root) if root is not None else results_root()
    return base / dataset_name / trainer_folder_name(trainer, plans, configuration)


def fold_folder(trainer_dir: str | Path, fold: int | str) -> Path:
    return Path(trainer_dir) / f"{_FOLD_PREFIX}{fold}"


def trained_folds(trainer_dir: str | Path) -> list[str]:
    """Names of the folds with a folder in ``trainer_dir`` ('0', '1', 'all', ...), sorted."""
    return sorted(p.name.removeprefix(_FOLD_PREFIX) for p in Path(trainer_dir).glob(f"{_FOLD_PREFIX}*") if p.is_dir())


def stage_folder_of_fold(fold_dir: str | Path, stage: int) -> Path:
    """<fold folder>/stage<s> (for code that already holds the fold folder)."""
    return Path(fold_dir) / f"stage{stage}"


def stage_folder(trainer_dir: str | Path, fold: int | str, stage: int) -> Path:
    return stage_folder_of_fold(fold_folder(trainer_dir, fold), stage)


def checkpoint_path(trainer_dir: str | Path, fold: int | str, stage: int, checkpoint_name: str = CHECKPOINT_FINAL) -> Path:
    return stage_folder(trainer_dir, fold, stage) / checkpoint_name


def fold_final_checkpoint(trainer_dir: str | Path, fold: int | str) -> Path:
    """The fold's own final model: a copy of Stage II's final checkpoint when Stage II ran, else Stage I's."""
    return fold_folder(trainer_dir, fold) / CHECKPOINT_FINAL


CHECKPOINTS = (CHECKPOINT_FINAL, CHECKPOINT_LATEST, CHECKPOINT_BEST)
# learning curves: a stage also keeps its weights at these fractions of its schedule; 1 is a copy of the final
# checkpoint under a stage-specific name (predicting checkpoint_final.pth picks Stage II when it exists)
PROGRESS_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
LEARNING_CURVE = "learning_curve"


def progress_checkpoint_name(stage: int, fraction: float) -> str:
    """``checkpoint_stage1_at_0.125.pth``: the stage is in the name so that a Stage I point of a learning curve is
    never mistaken for Stage II's (prediction picks Stage II when both stage folders hold the name)."""
    return f"checkpoint_stage{stage}_at_{fraction:g}.pth"


def validation_folder(trainer_dir: str | Path, fold: int | str, stage: int) -> Path:
    return stage_folder(trainer_dir, fold, stage) / VALIDATION


def validation_summary(trainer_dir: str | Path, fold: int | str, stage: int) -> Path:
    return validation_folder(trainer_dir, fold, stage) / SUMMARY


def val_predictions_folder(trainer_dir: str | Path, fold: int | str) -> Path:
    """<fold folder>/val_predictions: diffoseg_predict's outputs on the fold's held-out cases."""
    return fold_folder(trainer_dir, fold) / VAL_PREDICTIONS


def ts_predictions_folder(trainer_dir: str | Path, fold: int | str = "all") -> Path:
    """<fold folder>/test_predictions: diffoseg_predict's outputs on the dataset's test cases (imagesTs) by the
    model trained on every training case (fold 'all'; benchmarks/quality/real_data.py test)."""
    return fold_folder(trainer_dir, fold) / TEST_PREDICTIONS


def ts_learning_curve_folder(trainer_dir: str | Path, checkpoint_name: str, fold: int | str = "all") -> Path:
    """<fold folder>/test_learning_curve/<checkpoint stem>: the test-case predictions of one learning-curve point."""
    return fold_folder(trainer_dir, fold) / TEST_LEARNING_CURVE / Path(checkpoint_name).stem


def learning_curve_folder(trainer_dir: str | Path, fold: int | str, checkpoint_name: str) -> Path:
    """<fold folder>/learning_curve/<checkpoint stem>: the held-out predictions of one learning-curve point."""
    return fold_folder(trainer_dir, fold) / LEARNING_CURVE / Path(checkpoint_name).stem


def rater_list_file(trainer_dir: str | Path, fold: int | str) -> Path:
    """<fold folder>/raters.json: the fold's raters after diffoseg_add_rater (prediction reads it)."""
    return fold_folder(trainer_dir, fold) / RATER_LIST
