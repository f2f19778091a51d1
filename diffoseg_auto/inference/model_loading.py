"""Rebuild trained denoisers from a results folder (one per fold) for prediction.

The model folder is a trainer folder of diffoseg_auto.results_layout; each fold's stage checkpoint
is ``results_layout.checkpoint_path(model_folder, fold, stage, checkpoint_name)``.

Checkpoints carry the plans and the trainer name, so the network is rebuilt exactly as it was trained,
whatever the plans file on disk says today: a baseline trainer's network (network.baselines), else the
DiffOSeg denoiser.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
from diffoseg_auto.errors import UserError
from diffoseg_auto.network.baselines import baseline_network_class
from diffoseg_auto.plans.network_arguments import baseline_from_plans, denoiser_from_plans, diffusion_from_plans
from diffoseg_auto.plans.plans import Plans, plans_from_dict
from diffoseg_auto.results_layout import CHECKPOINT_FINAL, checkpoint_path, fold_folder, rater_list_file, trained_folds
from diffoseg_auto.io.rater_list import load_rater_list
from diffoseg_auto.io.checkpoint_io import load_checkpoint

# init_args entries that must agree between the folds of an ensemble
_ENSEMBLE_KEYS = ("trainer_name", "dataset_name", "plans_name", "configuration", "num_classes", "num_raters")


class ModelLoadError(UserError, RuntimeError):
    """A model folder / checkpoint that cannot be used for this prediction (the message names the file and the fix)."""


def has_stage2(model_folder: str | Path, folds: Sequence[int | str], checkpoint_name: str = CHECKPOINT_FINAL) -> bool:
    """True when every requested fold has a Stage II checkpoint."""
    return all(checkpoint_path(model_folder, f, 2, checkpoint_name).is_file() for f in folds)


def _missing_checkpoint_error(model_folder: Path, fold: int | str, stage: int, checkpoint_name: str) -> ModelLoadError:
    path = checkpoint_path(model_folder, fold, stage, checkpoint_name)
    fold_dir = fold_folder(model_folder, fold)
    if not model_folder.is_dir():
        return ModelLoadError(f"{model_folder}: model folder does not exist. Check -d / -tr / -p / -c, or train the model first "
                              "(diffoseg_train).")
    if not fold_dir.is_dir():
        trained = trained_folds(model_folder)
        return ModelLoadError(f"{fold_dir}: fold {fold} was not trained. Trained folds: {trained or 'none'}; pass them with -f.")
    if stage == 2 and checkpoint_path(model_folder, fold, 1, checkpoint_name).is_file():
        return ModelLoadError(f"{path}: no Stage II model for fold {fold} (Stage I exists). Train Stage II "
                              "(diffoseg_train ... --stage 2) for per-rater predictions, or predict the consensus only "
                              "with --raters none.")
    present = sorted(p.name for p in path.parent.glob("*.pth")) if path.parent.is_dir() else []
    return ModelLoadError(f"{path}: checkpoint not found. Checkpoints in {path.parent}: {present or 'none'} (choose one with -chk).")


def added_raters_checkpoint(model_folder: Path, fold: int | str, stage: int, checkpoint_name: str) -> str:
    """The final Stage II model of a fold that diffoseg_add_rater extended is the extended one (its raters.json
    names it): the existing raters' weights in it are the original's, bit for bit, so every rater is predicted
    from one model. Any other request is the named checkpoint."""
    listing = rater_list_file(model_folder, fold)
    if stage != 2 or checkpoint_name != CHECKPOINT_FINAL or not listing.is_file():
        return checkpoint_name
    return load_rater_list(listing)["checkpoint"]


def model_raters(model_folder: Path, folds: Sequence[int | str], dataset_raters: Sequence[str],
                 checkpoint_name: str = CHECKPOINT_FINAL) -> list[str]:
    """The raters a Stage II prediction of ``folds`` can name: the dataset's, plus those diffoseg_add_rater added
    (every fold of an ensemble must list the same)."""
    lists = []
    for fold in folds:
        listing = rater_list_file(model_folder, fold)
        extended = added_raters_checkpoint(model_folder, fold, 2, checkpoint_name) != checkpoint_name
        lists.append(list(load_rater_list(listing)["raters"]) if extended else list(dataset_raters))
    if any(r != lists[0] for r in lists):
        raise ModelLoadError(f"{model_folder}: folds {list(folds)} have different raters ({lists}); add the same experts "
                             "to every fold (diffoseg_add_rater) or predict the folds separately.")
    return lists[0]


def trained_network(trainer_name: str | None, plans: Plans, configuration: str, stage: int) -> nn.Module:
    """The (untrained) network that ``trainer_name`` trains: a baseline's, else the DiffOSeg denoiser of ``stage``."""
    baseline = baseline_network_class(trainer_name or "")
    if baseline is not None:
        return baseline_from_plans(baseline, plans, configuration)
    return denoiser_from_plans(plans, configuration, stage)


def load_trained_model(model_folder: str | Path, folds: Sequence[int | str], stage: int,
                       checkpoint_name: str = CHECKPOINT_FINAL, device: torch.device | str = "cpu",
                       expected_dataset: str | None = None) -> tuple[list[nn.Module], Plans, str, CategoricalDiffusion]:
    """Load the EMA weights of ``folds`` -> (networks in eval mode on ``device``, plans, configuration name, diffusion).

    The networks are those of the checkpoints' trainer (``trained_network``): DiffOSeg denoisers
    (network.denoiser_base.DenoiserBase) or a baseline's (network.baselines.base.BaselineNetwork).
    ``expected_dataset``: the DatasetXXX_Name the caller predicts for; a checkpoint trained on
    another dataset is an error.
    """
    model_folder = Path(model_folder)
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 (consensus) or 2 (per-rater), got {stage}")
    if not folds:
        raise ValueError("load_trained_model: no folds given")
    nets: list[nn.Module] = []
    first_args: dict | None = None
    plans: Plans | None = None
    for fold in folds:
        name = added_raters_checkpoint(model_folder, fold, stage, checkpoint_name)
        path = checkpoint_path(model_folder, fold, stage, name)
        if not path.is_file() and name != checkpoint_name:
            raise ModelLoadError(f"{path}: checkpoint not found, but {rater_list_file(model_folder, fold)} names it. "
                                 "Restore it, or delete that rater list to predict the original raters.")
        if not path.is_file():
            raise _missing_checkpoint_error(model_folder, fold, stage, checkpoint_name)
        ckpt = load_checkpoint(path)
        args = ckpt["init_args"]
        if "plans" not in ckpt:
            raise ModelLoadError(f"{path}: the checkpoint has no 'plans'; it cannot be rebuilt. Re-save it with diffoseg_train.")
        if int(args.get("stage", stage)) != stage:
            raise ModelLoadError(f"{path}: init_args says stage {args.get('stage')}, but it lies in the {path.parent.name} folder (stage {stage}).")
        if expected_dataset is not None and args.get("dataset_name") != expected_dataset:
            raise ModelLoadError(f"{path}: this model was trained on {args.get('dataset_name')!r}, not on {expected_dataset!r} "
                                 "(-d). Predict with the dataset the model was trained on, or point to the right model folder.")
        if first_args is None:
            first_args = args
            plans = plans_from_dict(ckpt["plans"], where=f"{path} (plans)")
        else:
            diffs = [f"{k}: {first_args.get(k)!r} vs {args.get(k)!r}" for k in _ENSEMBLE_KEYS if first_args.get(k) != args.get(k)]
            if diffs:
                raise ModelLoadError(f"{path}: fold {fold} does not match fold {folds[0]} ({'; '.join(diffs)}); "
                                     "an ensemble needs folds of the same training setup.")
        net = trained_network(args.get("trainer_name"), plans, args["configuration"], stage)
        state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in ckpt["network_weights"].items()}
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ModelLoadError(f"{path}: weights do not fit the network rebuilt from its plans ({str(e).splitlines()[0]}).") from None
        nets.append(net.to(device).eval())
    assert plans is not None and first_args is not None
    configuration = first_args["configuration"]
    return nets, plans, configuration, diffusion_from_plans(plans, configuration)


def load_predictor_from_training_output(model_folder: str | Path, folds: Sequence[int | str], stage: int,
                                        checkpoint_name: str = CHECKPOINT_FINAL, device: torch.device | str = "cpu",
                                        use_mirroring: bool = True, step_size: float = 0.5):
    """Convenience: ``load_trained_model`` wrapped in a ``DiffOSegPredictor`` (the fold ensemble)."""
    from diffoseg_auto.inference.predictor import DiffOSegPredictor, PredictorSettings

    nets, plans, configuration, diffusion = load_trained_model(model_folder, folds, stage, checkpoint_name, device)
    return DiffOSegPredictor(nets, diffusion, plans.get_configuration(configuration), device,
                             PredictorSettings(use_mirroring, step_size))
