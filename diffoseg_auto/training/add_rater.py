"""``diffoseg_add_rater``: a new expert from a few annotated cases, on a trained fold's Stage II model.

    diffoseg_add_rater -d 100 -c 2d -f 0 --name reader5 -i new_images/ -l new_reader_masks/ [--max_minutes M]

Every existing weight stays frozen; only the new rater's rows of the per-rater parameters are fitted (the rater
embedding, the rater input's channel and the prompt block's rater map: network/rater_extension.py; method.md,
"A new expert from a few cases"). The images go through the planned preprocessing, so raw files (nnU-Net naming,
the dataset's file ending and channels) are all it needs. Every input is checked before anything is written;
then the extended model is written next to the original as ``fold_N/stage2/checkpoint_added_raters.pth``
(atomically; the original stays untouched) with the fold's rater list ``fold_N/raters.json``, which prediction
reads (``diffoseg_predict ... --raters reader5`` or ``--raters all``). Adding a second expert extends the
extended model.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diffoseg_auto.dataset.label_checks import check_label_array
from diffoseg_auto.dataset.raw_dataset import list_cases
from diffoseg_auto.errors import InvalidArgumentError, MissingFileError, UserError
from diffoseg_auto.io.checkpoint_io import load_checkpoint, save_checkpoint
from diffoseg_auto.io.rater_list import load_rater_list
from diffoseg_auto.io.image_io import geometry_matches, read_images, read_seg
from diffoseg_auto.network.rater_extension import extended_state_dict, train_only_new_rater
from diffoseg_auto.plans.network_arguments import denoiser_from_plans, diffusion_from_plans
from diffoseg_auto.plans.plans import Plans, plans_from_dict
from diffoseg_auto.preprocessing.case_storage import save_case, unpack_dataset
from diffoseg_auto.preprocessing.preprocessor import DefaultPreprocessor
from diffoseg_auto.results_layout import (ADDED_RATERS_CHECKPOINT, CHECKPOINT_FINAL, checkpoint_path, rater_list_file,
                                          trainer_folder)
from diffoseg_auto.runtime.device import device_problem, resolve_device
from diffoseg_auto.runtime.precision import autocast_dtype, grad_scaler
from diffoseg_auto.training.augmentation import get_training_transforms, make_augmenter, sampling_patch_size
from diffoseg_auto.training.data_loader import DiffOSegDataLoader
from diffoseg_auto.training.diffusion_step import DiffusionLoss, optimizer_step
from diffoseg_auto.training.finite_guard import non_finite_problem
from diffoseg_auto.training.optim import lr_at_progress, set_lr
from diffoseg_auto.training.stage_budget import BUDGET_CLOCKS, StageBudget
from diffoseg_auto.training.trainer_registry import get_trainer_class
from diffoseg_auto.utilities.argument_checks import above, at_least, raise_problems
from diffoseg_auto.utilities.command_runner import run_command
from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
from diffoseg_auto.utilities.file_ops import load_json, save_json

logger = logging.getLogger(__name__)

# chosen on the toy dataset's tuning seed 0 (results.md, "A new expert from a few cases")
DEFAULT_ITERATIONS = 300
LR_FACTOR = 10.0  # the new rows start from the raters' mean and are few: 10x Stage II's learning rate


class AddRaterError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class AddRaterRequest:
    """One new expert for one trained fold."""

    dataset: str | int
    configuration: str
    fold: int | str
    name: str
    images: Path
    labels: Path
    trainer: str = "DiffOSegTrainer"
    plans: str = "DiffOSegPlans"
    iterations: int = DEFAULT_ITERATIONS
    max_minutes: float | None = None
    device: str | None = None
    seed: int = 0
    model_folder: Path | None = None

    def validate(self) -> None:
        raise_problems([at_least("--iterations", self.iterations, 1), above("--max_minutes", self.max_minutes, 0),
                        device_problem(self.device),
                        None if self.name and self.name.strip() == self.name and "/" not in self.name else
                        f"--name '{self.name}': give a plain rater name (no slashes or surrounding spaces)."])
        if getattr(get_trainer_class(self.trainer), "is_baseline", False):
            raise AddRaterError(f"-tr {self.trainer}: only DiffOSeg models take a new expert (a baseline has no "
                                "prompts; a multi-head U-Net would need a new head, which this tool does not build).")
        for option, folder in (("-i", self.images), ("-l", self.labels)):
            if not Path(folder).is_dir():
                raise MissingFileError(f"{option} {folder}: folder not found.")


def model_folder_of(req: AddRaterRequest) -> Path:
    if req.model_folder is not None:
        return Path(req.model_folder)
    return trainer_folder(resolve_dataset_name(req.dataset), req.trainer, req.plans, req.configuration)


def base_checkpoint(folder: Path, fold: int | str) -> tuple[Path, list[dict]]:
    """(the model to extend, the experts added before): the fold's extended model when experts were added before,
    else Stage II's final and no history."""
    added = rater_list_file(folder, fold)
    if added.is_file():
        rater_list = load_rater_list(added)
        return checkpoint_path(folder, fold, 2, rater_list["checkpoint"]), rater_list.get("added", [])
    path = checkpoint_path(folder, fold, 2, CHECKPOINT_FINAL)
    if not path.is_file():
        raise MissingFileError(f"{path}: no Stage II model in this fold. Train Stage II first "
                               f"(diffoseg_train DATASET CONFIGURATION {fold} --stage 2).")
    return path, []


def read_new_cases(req: AddRaterRequest, file_ending: str, num_channels: int, num_classes: int
                   ) -> list[tuple[str, np.ndarray, np.ndarray, dict]]:
    """(case, image (C,*S), mask (*S), props) of every case; each problem is one line naming the file and the fix."""
    images = list_cases(req.images, file_ending, num_channels)
    masks = {f.name[:-len(file_ending)]: f for f in sorted(Path(req.labels).iterdir())
             if f.name.endswith(file_ending) and not f.name.startswith(".")}
    if not masks and not images:
        raise AddRaterError(f"{req.labels}: no masks ending in {file_ending} and {req.images}: no images. Give the new "
                            f"expert's cases as <case>_0000{file_ending} images and <case>{file_ending} masks.")
    for case in sorted(set(masks) - set(images)):
        raise AddRaterError(f"{masks[case]}: mask without its image; add {Path(req.images) / f'{case}_0000{file_ending}'}"
                            " or remove the mask.")
    for case in sorted(set(images) - set(masks)):
        raise AddRaterError(f"{images[case][0]}: image without the new expert's mask; add "
                            f"{Path(req.labels) / f'{case}{file_ending}'} or remove the image.")
    out = []
    for case in sorted(images):
        data, props = read_images(images[case])
        seg, seg_props = read_seg(masks[case])
        check_label_array(seg, masks[case], data.shape[1:], num_classes)
        bad = geometry_matches(props, seg_props)
        if bad:
            raise AddRaterError(f"{masks[case]}: {', '.join(bad)} differ(s) from its image {images[case][0].name}. "
                                "Save the mask in the image's geometry.")
        out.append((case, data, seg, props))
    return out


def extended_plans(plans: Plans, name: str) -> Plans:
    d = plans.to_dict()
    d["raters"] = list(d["raters"]) + [name]
    return plans_from_dict(d)


def fit_new_rater(network, plans: Plans, req: AddRaterRequest, data_folder: Path, cases: list[str],
                  device: torch.device) -> dict:
    """Fit the new rater's rows (the last index) on its cases with Stage II's training step (diffusion_step.py:
    the loss, clipping, non-finite check and step of diffoseg_train, over the new rows only), its learning-rate
    schedule and its time budget (stage_budget.py); returns the loss record."""
    cfg = plans.get_configuration(req.configuration)
    k, patch, sd = plans.num_classes, list(cfg.patch_size), cfg.spatial_dims
    initial_lr = cfg.schedule(2).initial_lr * LR_FACTOR
    trainable = train_only_new_rater(network)
    opt = torch.optim.Adam(trainable, lr=initial_lr)  # no weight decay: frozen rows stay put
    loader = DiffOSegDataLoader(data_folder, cases, cfg.batch_size, sampling_patch_size(patch, cfg.augmentation, sd),
                                cfg.training.oversample_foreground_percent, cfg.slice_axis, req.seed)
    batches = make_augmenter(loader, get_training_transforms(patch, cfg.augmentation, sd), 0)
    amp = autocast_dtype(cfg.training.precision, device)
    loss_of = DiffusionLoss(diffusion_from_plans(plans, req.configuration), k, 2, cfg.training, device, amp)
    scaler = grad_scaler(device, amp)
    budget = StageBudget(req.max_minutes, BUDGET_CLOCKS["wall"])
    rng, gen = np.random.RandomState(req.seed), torch.Generator().manual_seed(req.seed)
    network.train()
    losses, start = [], time.time()
    bar = tqdm(range(req.iterations), desc="fitting the new expert's prompt")
    for it in bar:
        spent = budget.spent_s()
        if it > 0 and budget.limited and spent >= budget.seconds:
            logger.warning(f"--max_minutes {req.max_minutes:g}: stopped after {it} of {req.iterations} iterations")
            break
        set_lr(opt, lr_at_progress(initial_lr, max(it / req.iterations, budget.fraction(spent)),
                                   cfg.training.lr_schedule, cfg.training.poly_exponent))
        loss = loss_of(network, next(batches), rng, gen)
        losses.append(optimizer_step(loss, opt, scaler, cfg.training.grad_clip, _nothing_written_if_non_finite(it)))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    network.eval()
    return {"iterations": len(losses), "first_loss": round(float(np.mean(losses[:20])), 6),
            "final_loss": round(float(np.mean(losses[-20:])), 6), "seconds": round(time.time() - start, 1)}


def _nothing_written_if_non_finite(iteration: int):
    def check(loss: torch.Tensor, grad_norm: torch.Tensor, scaler_enabled: bool) -> None:
        problem = non_finite_problem(loss, grad_norm, scaler_enabled)
        if problem:
            raise AddRaterError(f"non-finite {problem} at iteration {iteration} of the fitting; nothing was written. "
                                "Check the new cases' images for NaN/Inf.")
    return check


def add_rater(req: AddRaterRequest) -> Path:
    """Fit ``req.name`` on its cases and write the extended model and the fold's rater list; returns the checkpoint."""
    req.validate()
    folder = model_folder_of(req)
    base, previous = base_checkpoint(folder, req.fold)
    ckpt = load_checkpoint(base)
    plans = plans_from_dict(ckpt["plans"])
    if req.name in plans.raters:
        raise AddRaterError(f"--name {req.name}: this model already has a rater of that name ({', '.join(plans.raters)}); "
                            "choose another name.")
    dataset_json = load_json(folder / "dataset.json") if (folder / "dataset.json").is_file() else {}
    file_ending = dataset_json.get("file_ending", ".nii.gz")
    cases = read_new_cases(req, file_ending, plans.num_input_channels, plans.num_classes)
    ext = extended_plans(plans, req.name)
    device = resolve_device(req.device)
    network = denoiser_from_plans(ext, req.configuration, 2).to(device)
    network.load_state_dict(extended_state_dict(ckpt["network_weights"], network))
    r = len(ext.raters)
    with tempfile.TemporaryDirectory(prefix="diffoseg_add_rater_") as tmp:
        pre = DefaultPreprocessor(ext, req.configuration)
        for case, data, seg, props in cases:
            segs = np.zeros((r, *seg.shape), np.uint8)
            segs[-1] = seg  # only the new expert annotated these cases
            d, s, m, p = pre.run_case_arrays(data, segs, np.arange(r) == r - 1, props, case)
            save_case(Path(tmp), case, d, s, m, p)
        unpack_dataset(Path(tmp))
        record = fit_new_rater(network, ext, req, Path(tmp), [c[0] for c in cases], device)
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    out = checkpoint_path(folder, req.fold, 2, ADDED_RATERS_CHECKPOINT)
    added = {"name": req.name, "cases": [c[0] for c in cases], "images": str(req.images), "labels": str(req.labels),
             "extended_from": base.name, **record}
    save_checkpoint(out, {**{k: v for k, v in ckpt.items() if k not in ("optimizer_state", "grad_scaler_state")},
                          "network_weights": state, "raw_network_weights": state, "plans": ext.to_dict(),
                          "init_args": {**ckpt["init_args"], "num_raters": r}, "added_raters": previous + [added]})
    save_json({"raters": list(ext.raters), "checkpoint": ADDED_RATERS_CHECKPOINT, "added": previous + [added]},
              rater_list_file(folder, req.fold))
    print(f"{req.name}: prompt fitted on {len(cases)} case(s), {record['iterations']} iterations, loss "
          f"{record['first_loss']:.4f} -> {record['final_loss']:.4f}; wrote {out} and {rater_list_file(folder, req.fold)}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Add a new expert to a trained fold's Stage II model from a few cases "
                                            "that expert annotated (only the new prompt is fitted).")
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-c", required=True, help="configuration, e.g. 2d")
    p.add_argument("-f", required=True, help="fold (0..4 or all)")
    p.add_argument("--name", required=True, help="the new expert's name (a new rater; must not exist)")
    p.add_argument("-i", required=True, help="the cases' images: <case>_0000<file_ending>, ... (the dataset's channels)")
    p.add_argument("-l", required=True, help="the new expert's masks: <case><file_ending>, one per image case")
    p.add_argument("-tr", default="DiffOSegTrainer", help="trainer of the model (baselines are refused)")
    p.add_argument("-p", default="DiffOSegPlans", help="plans identifier (default DiffOSegPlans)")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS,
                   help=f"fitting iterations (default {DEFAULT_ITERATIONS})")
    p.add_argument("--max_minutes", type=float, default=None, help="stop fitting after this many minutes")
    p.add_argument("-device", default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="random seed (patches, noise)")
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    fold = int(a.f) if str(a.f).isdigit() else a.f
    add_rater(AddRaterRequest(a.d, a.c, fold, a.name, Path(a.i), Path(a.l), a.tr, a.p, a.iterations, a.max_minutes,
                              a.device, a.seed))


if __name__ == "__main__":
    sys.exit(run_command("diffoseg_add_rater", main))
