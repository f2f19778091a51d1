"""Time-budget planning: a configuration derived from a planned one whose two training stages fit HOURS on a device.

The planned configurations are sized for a GPU's memory, not for the time a user has: at the planned
schedule (100 x 250 + 50 x 250 iterations) a CPU needs days. ``add_time_budget_configuration`` writes a
configuration that inherits from the planned one (readable JSON, every changed field spelled out) with:

- candidates that vary what the measurements in results.md show matters: a coarser spacing (as nnU-Net's
  lowres; the patch and topology are planned again at it), narrower stages (widths divided), with the planned
  batch and Stage I / Stage II split of the time (``stage1_fraction``, default 2/3 as the planned 100 : 50 epochs);
- each candidate's cost measured with a few seconds of real training iterations on the device
  (diffoseg_auto.training.throughput), recorded with the device name in the configuration's notes;
- the rule of documentation/planning.md ("Time budget"): the most expensive candidate (the most capacity and
  resolution) that still gets ``min_stage1_iterations`` Stage I iterations in its share of the budget; if none
  does, the one that gets the most. The schedule never exceeds the planned one.

Tests inject the throughput table (``throughput=``), so planning is deterministic there.
"""
from __future__ import annotations

import copy
import logging
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from planners.topology import get_pool_and_conv_props

if TYPE_CHECKING:
    from diffoseg_auto.inference.prediction_cost import PredictionCost

logger = logging.getLogger(__name__)

SPACING_FACTORS = (1, 2, 4, 8)
FEATURE_DIVISORS = (1, 2, 4)
MIN_FEATURES = 8
MIN_IMAGE_EDGE = 16          # a coarser spacing is a candidate only while the median image keeps this many voxels per axis
MIN_OBJECT_VOXELS = 16       # ... and while the median annotated object keeps this many voxels (fingerprint)
# The rule's floor, chosen on the tuning folds (planning.md, "Time budget"; results.md section 1): on LIDC fold 0 the
# full-width network won at 210 and 546 Stage I iterations over widths / 2 and / 4 with 2 to 4x more; on BU-BIL fold 0
# spacing x4 (60 iterations) had a lower GED than x8 (320). Capacity and resolution first, down to this many.
MIN_STAGE1_ITERATIONS = 50
MIN_EPOCHS = 40              # enough epochs for the poly learning rate and the learning-curve checkpoints
MIN_ITERATIONS_PER_EPOCH = 10
STAGE_START_SECONDS = 10.0   # building the loaders, unpacking, the first batches
EPOCH_PLOT_SECONDS = 0.3     # progress.png every epoch


class TimeBudgetError(ValueError):
    pass


@dataclass(frozen=True)
class Candidate:
    spacing_factor: int
    feature_divisor: int

    @property
    def key(self) -> str:
        return f"spacing_x{self.spacing_factor}_widths_div{self.feature_divisor}"


@dataclass(frozen=True)
class StageCost:
    """Seconds per piece of one stage (as diffoseg_auto.training.throughput.StageThroughput measures them)."""

    train_iteration_s: float
    val_iteration_s: float
    augmentation_s: float = 0.0
    checkpoint_s: float = 0.0
    denoiser_row_s: float | None = None

    @classmethod
    def from_mapping(cls, m: Mapping) -> "StageCost":
        return cls(**{k: m[k] for k in cls.__dataclass_fields__ if k in m})


# ---------------------------------------------------------------------------------------------- candidates
def _in_plane(cfg: dict) -> list[int]:
    """Axes of cfg['spacing'] that the network sees (a 2d configuration of 3D data drops its slice axis)."""
    n = len(cfg["spacing"])
    axis = cfg.get("slice_axis")
    return [i for i in range(n) if not (cfg["spatial_dims"] == 2 and n == 3 and i == axis)]


def candidate_configuration(plans: dict, base: str, cand: Candidate) -> dict | None:
    """The fields of ``base`` that ``cand`` changes, as a configuration inheriting from it; None if not viable."""
    from planners.experiment_planner import schedule_shift_for_patch

    cfg = resolved_configuration(plans, base)
    arch = cfg["architecture"]
    axes = _in_plane(cfg)
    f = cand.spacing_factor
    out: dict = {"inherits_from": base}
    n_stages = arch["n_stages"]
    if f != 1:
        net_spacing = [cfg["spacing"][i] * f for i in axes]
        median = [int(math.ceil(v / f)) for v in cfg["median_image_size_in_voxels"]]
        if min(median) < MIN_IMAGE_EDGE:
            return None
        patch = [min(p, m) for p, m in zip(cfg["patch_size"], median)]
        _, strides, kernels, patch, _ = get_pool_and_conv_props(net_spacing, patch)
        n_stages = len(strides)
        spacing = list(cfg["spacing"])
        for i in axes:
            spacing[i] = spacing[i] * f
        out.update({"data_identifier": f"{plans['plans_name']}_{base}_spacing_x{f}", "spacing": spacing,
                    "median_image_size_in_voxels": median, "patch_size": [int(p) for p in patch]})
        out["diffusion"] = {"schedule_shift": schedule_shift_for_patch(patch)}
    if f != 1 or cand.feature_divisor != 1:
        feats = list(arch["features_per_stage"])
        while len(feats) < n_stages:
            feats.append(min(2 * feats[-1], max(arch["features_per_stage"])))
        # lists are replaced, not merged, by inheritance: every per-stage list is written
        new_arch = {"n_stages": n_stages,
                    "features_per_stage": [max(MIN_FEATURES, x // cand.feature_divisor) for x in feats[:n_stages]],
                    "n_conv_per_stage": [arch["n_conv_per_stage"][0]] * n_stages,
                    "n_conv_per_stage_decoder": [arch["n_conv_per_stage_decoder"][0]] * (n_stages - 1)}
        if f != 1:
            new_arch.update({"strides": strides, "kernel_sizes": kernels})
        out["architecture"] = new_arch
    return out


def resolved_configuration(plans: dict, name: str) -> dict:
    """A configuration with its inheritance applied (as plans.load_plans resolves it), as a plain dict."""
    import dataclasses

    from diffoseg_auto.plans.plans import plans_from_dict

    return dataclasses.asdict(plans_from_dict(copy.deepcopy(plans)).get_configuration(name))


def viable_candidates(plans: dict, base: str, median_object_voxels: float | None = None) -> dict[Candidate, dict]:
    """Every candidate of the grid that keeps the image and (with the fingerprint's size) the objects resolvable."""
    dim = resolved_configuration(plans, base)["spatial_dims"]
    out = {}
    for f in SPACING_FACTORS:
        if f > 1 and median_object_voxels is not None and median_object_voxels / f ** dim < MIN_OBJECT_VOXELS:
            continue
        for d in FEATURE_DIVISORS:
            c = Candidate(f, d)
            cfg = candidate_configuration(plans, base, c)
            if cfg is not None:
                out[c] = cfg
    return out


# ---------------------------------------------------------------------------------------------- schedule
def iteration_seconds(cost: StageCost, num_workers: int) -> float:
    """One training iteration: augmentation runs in the trainer's process without workers, beside it with them."""
    if num_workers <= 0:
        return cost.train_iteration_s + cost.augmentation_s
    return max(cost.train_iteration_s, cost.augmentation_s / num_workers)


def stage_schedule(cost: StageCost, seconds: float, planned_iterations: int, planned_ipe: int, val_ratio: float,
                   num_workers: int) -> dict:
    """Epochs x iterations of one stage that fit ``seconds`` (never more than the planned iterations)."""
    it = iteration_seconds(cost, num_workers)

    def per_iteration(ipe: int) -> float:  # an iteration's share of the per-epoch validation, checkpoint and plot
        val = max(1, round(ipe * val_ratio))
        return it + (val * cost.val_iteration_s + cost.checkpoint_s + EPOCH_PLOT_SECONDS) / ipe

    usable = max(0.0, seconds - STAGE_START_SECONDS)
    ipe = planned_ipe
    total = min(planned_iterations, int(usable // per_iteration(ipe)))
    if total < MIN_EPOCHS * ipe:
        ipe = max(MIN_ITERATIONS_PER_EPOCH, total // MIN_EPOCHS)
        total = min(planned_iterations, int(usable // per_iteration(ipe)))
    epochs = max(1, total // ipe)
    # fewer epochs than planned: spread the remainder over them, so that rounding to whole epochs does not leave up
    # to an epoch of the budget unused (at 0.1 h a 10-iteration epoch of a slow candidate is ~10% of a stage)
    wider = min(planned_iterations, total) // epochs
    if wider > ipe and STAGE_START_SECONDS + epochs * wider * per_iteration(wider) <= max(seconds, 0.0):
        ipe = wider
    val = max(1, round(ipe * val_ratio))
    return {"num_epochs": int(epochs), "iterations_per_epoch": int(ipe), "num_val_iterations_per_epoch": int(val),
            "iterations": int(epochs * ipe),
            "estimated_seconds": round(STAGE_START_SECONDS + epochs * ipe * per_iteration(ipe), 1)}


def choose_candidate(rows: list[dict], min_stage1_iterations: int) -> dict:
    """The rule: the most expensive candidate (per Stage I iteration) reaching ``min_stage1_iterations``; else the
    one with the most Stage I iterations. Ties: finer spacing, then wider."""
    order = sorted(rows, key=lambda r: (-r["stage1_seconds_per_iteration"], r["spacing_factor"], r["feature_divisor"]))
    for r in order:
        if r["stage1"]["iterations"] >= min_stage1_iterations:
            return r
    return max(order, key=lambda r: (r["stage1"]["iterations"], -r["spacing_factor"], -r["feature_divisor"]))


# ---------------------------------------------------------------------------------------------- estimates
def prediction_estimates(cfg: dict, cost: PredictionCost, num_cases: int, cost2: StageCost, cost1: StageCost) -> dict:
    """Seconds to predict one median case (``cost``: its network evaluations) and to run both end-of-stage validations
    (not part of the budget)."""
    if cost2.denoiser_row_s is None:
        return {}
    w, s, num_raters, spr = cost.windows, cost.work.steps, cost.work.prompts, cost.work.samples_per_prompt
    evals_case = cost.network_evaluations
    val_cases = max(1, num_cases // 5)
    val_s = val_cases * w * s * (cfg["training"]["num_val_samples"] * (cost1.denoiser_row_s or 0.0)
                                 + (cfg["training"]["num_val_samples"] + num_raters * spr) * cost2.denoiser_row_s)
    return {"windows_per_case": w, "network_evaluations_per_case": int(evals_case),
            "prediction_seconds_per_case": round(evals_case * cost2.denoiser_row_s, 1),
            "validation_minutes_both_stages": round(val_s / 60, 1), "validation_cases": val_cases}


def device_description(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} torch threads)"


# ---------------------------------------------------------------------------------------------- measuring
def measure_candidate(plans: dict, name: str, config: dict, device: str, seconds: float) -> tuple[dict, dict]:
    """(Stage I, Stage II) costs of ``config`` measured with the real trainer on ``device``."""
    from diffoseg_auto.plans.plans import plans_from_dict
    from diffoseg_auto.training.throughput import measure_stage

    trial = copy.deepcopy(plans)
    trial["configurations"][name] = config
    p = plans_from_dict(trial)
    return tuple(measure_stage(p, name, s, device, seconds=seconds).to_dict() for s in (1, 2))


# ---------------------------------------------------------------------------------------------- entry
def plan_time_budget(plans: dict, base: str, hours: float, device: str = "cpu", name: str | None = None,
                     stage1_fraction: float = 2 / 3, min_stage1_iterations: int = MIN_STAGE1_ITERATIONS,
                     num_workers: int | None = None, measure_seconds: float = 3.0,
                     throughput: Mapping[str, tuple[Mapping, Mapping]] | None = None,
                     median_object_voxels: float | None = None, num_cases: int | None = None,
                     force: Candidate | None = None,
                     measure: Callable[[dict, str, dict, str, float], tuple[dict, dict]] = measure_candidate
                     ) -> tuple[str, dict]:
    """(name, configuration dict) of the budget configuration; ``throughput``: {candidate key: (stage1, stage2)}
    costs instead of measuring (tests); ``force``: plan this candidate's schedule whatever the rule says (sweeps)."""
    from diffoseg_auto.configuration import default_num_processes
    from diffoseg_auto.inference.prediction_cost import median_case_cost
    from diffoseg_auto.plans.plans import plans_from_dict

    if not hours > 0:
        raise TimeBudgetError(f"--time_budget must be > 0 hours, got {hours}")
    if not 0 < stage1_fraction <= 1:
        raise TimeBudgetError(f"stage1_fraction must be in (0, 1], got {stage1_fraction}")
    if base not in plans["configurations"]:
        raise TimeBudgetError(f"configuration '{base}' is not in the plans (available: "
                              f"{', '.join(plans['configurations'])}); choose one with --time_budget_base")
    workers = default_num_processes() if num_workers is None else int(num_workers)
    name = name or f"{base}_budget_{hours:g}h"
    base_cfg = resolved_configuration(plans, base)
    tr, s2 = base_cfg["training"], base_cfg["stage2"]
    val_ratio = tr["num_val_iterations_per_epoch"] / max(1, tr["iterations_per_epoch"])
    cands = viable_candidates(plans, base, median_object_voxels)
    if force is not None:
        if force not in cands:
            raise TimeBudgetError(f"candidate {force.key} is not viable for '{base}' (viable: "
                                  f"{', '.join(c.key for c in cands)})")
        cands = {force: cands[force]}
    rows = []
    for cand, cfg in cands.items():
        if throughput is not None:
            if cand.key not in throughput:
                continue
            c1, c2 = throughput[cand.key]
        else:
            c1, c2 = measure(plans, name, cfg, device, measure_seconds)
            logger.info(f"{cand.key}: {c1['train_iteration_s']:.3f} s / Stage I iteration, "
                        f"{c2['train_iteration_s']:.3f} s / Stage II iteration")
        k1, k2 = StageCost.from_mapping(c1), StageCost.from_mapping(c2)
        secs = hours * 3600.0
        st1 = stage_schedule(k1, secs * stage1_fraction, tr["num_epochs"] * tr["iterations_per_epoch"],
                             tr["iterations_per_epoch"], val_ratio, workers)
        st2 = (stage_schedule(k2, secs * (1 - stage1_fraction), s2["num_epochs"] * s2["iterations_per_epoch"],
                              s2["iterations_per_epoch"], val_ratio, workers) if stage1_fraction < 1 else None)
        rows.append({"candidate": cand.key, "spacing_factor": cand.spacing_factor,
                     "feature_divisor": cand.feature_divisor, "stage1_seconds_per_iteration": k1.train_iteration_s,
                     "stage2_seconds_per_iteration": k2.train_iteration_s, "stage1": st1, "stage2": st2,
                     "measured": {"stage1": dict(c1), "stage2": dict(c2)}, "_cfg": cfg, "_costs": (k1, k2)})
    if not rows:
        raise TimeBudgetError("no candidate has a throughput entry; measure them (omit the injected table)")
    chosen = choose_candidate(rows, min_stage1_iterations) if force is None else rows[0]
    out = copy.deepcopy(chosen["_cfg"])
    st1, st2 = chosen["stage1"], chosen["stage2"]
    out["training"] = {k: st1[k] for k in ("num_epochs", "iterations_per_epoch", "num_val_iterations_per_epoch")}
    if st2 is not None:
        out["stage2"] = {k: st2[k] for k in ("num_epochs", "iterations_per_epoch")}
    merged_plans = {**plans, "configurations": {**plans["configurations"], name: out}}
    merged = resolved_configuration(merged_plans, name)
    estimates = prediction_estimates(merged, median_case_cost(plans_from_dict(copy.deepcopy(merged_plans)), name),
                                     num_cases or 0, *reversed(chosen["_costs"]))
    total = st1["estimated_seconds"] + (st2["estimated_seconds"] if st2 else 0.0)
    out["notes"] = {"time_budget": {
        "hours": hours, "device": device, "device_name": device_description(device), "num_workers": workers,
        "stage1_fraction": round(stage1_fraction, 4), "base": base,
        "rule": (f"forced candidate {chosen['candidate']}" if force is not None else
                 f"most expensive candidate with >= {min_stage1_iterations} Stage I iterations, else the one with "
                 "the most (documentation/planning.md, 'Time budget')"),
        "chosen": chosen["candidate"], "estimated_training_hours": round(total / 3600, 3),
        "not_counted": estimates,
        "candidates": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]}}
    return name, out


def add_time_budget_configuration(plans_file: Path, hours: float, device: str = "cpu", base: str | None = None,
                                  name: str | None = None, **kwargs) -> tuple[str, dict]:
    """Plan a budget configuration and write it into the plans JSON (atomically); prints the plan's summary."""
    from diffoseg_auto.errors import InvalidArgumentError
    from diffoseg_auto.utilities.file_ops import load_json, save_json

    plans = load_json(plans_file)
    if base is None:
        base = "3d_fullres" if "3d_fullres" in plans["configurations"] else "2d"
    fp = plans_file.parent / "dataset_fingerprint.json"
    fingerprint = load_json(fp) if fp.is_file() else {}
    kwargs.setdefault("median_object_voxels", median_object_voxels_of(fingerprint) if fingerprint else None)
    kwargs.setdefault("num_cases", fingerprint.get("num_cases"))
    try:
        name, config = plan_time_budget(plans, base, hours, device, name, **kwargs)
    except TimeBudgetError as e:
        raise InvalidArgumentError(f"{plans_file}: {e}") from None
    plans["configurations"][name] = config
    save_json(plans, plans_file)
    logger.warning(budget_summary(name, config))
    return name, config


def median_object_voxels_of(fingerprint: dict) -> float | None:
    """The smallest per-class median object size of the fingerprint (what a coarser spacing must still resolve)."""
    per_class = (fingerprint.get("object_statistics") or {}).get("per_class") or {}
    sizes = [v.get("size_voxels_median") for v in per_class.values() if v.get("size_voxels_median")]
    return float(min(sizes)) if sizes else None


def budget_summary(name: str, config: dict) -> str:
    """What the planner chose, what it fits, and what the budget does not count (validation, prediction)."""
    tb = config["notes"]["time_budget"]
    row = next(r for r in tb["candidates"] if r["candidate"] == tb["chosen"])
    s2 = row["stage2"]
    est = tb["not_counted"]
    lines = [f"time budget {tb['hours']:g} h on {tb['device']} ({tb['device_name']}): configuration '{name}' = "
             f"{tb['base']} with {tb['chosen']}",
             f"  Stage I {row['stage1']['num_epochs']} x {row['stage1']['iterations_per_epoch']} iterations"
             + (f", Stage II {s2['num_epochs']} x {s2['iterations_per_epoch']}" if s2 else "")
             + f": estimated {tb['estimated_training_hours']:.2f} h of training"]
    if est:
        lines.append(f"  not counted: end-of-stage validation ~{est['validation_minutes_both_stages']} min, "
                     f"prediction ~{est['prediction_seconds_per_case']} s per case "
                     f"({est['network_evaluations_per_case']} network evaluations)")
    return "\n".join(lines)
