"""Time-budget planning: a configuration derived from a planned one whose whole ``diffoseg_train`` of one fold fits
HOURS on the device that planned it (documentation/planning.md, "Time budget").

The planned configurations are sized for a GPU's memory, not for the time a user has: at the planned
schedule (100 x 250 + 50 x 250 iterations) a CPU needs days. ``add_time_budget_configuration`` writes a
configuration that inherits from the planned one (readable JSON, every changed field spelled out) with:

- candidates (planners/budget_candidates.py): a coarser spacing, narrower stages, at the planned batch on a GPU and
  at most CPU_MAX_BATCH on a CPU; the Stage I / Stage II split of the time (``stage1_fraction``, default 2/3);
- the whole job counted (planners/budget_schedule.py and ``fit_job``): both stages' loops with their per-epoch
  validation loss and checkpoints, the end-of-stage checkpoints, and the end-of-stage validation sampling, whose
  samples, samples per rater and steps shrink (VALIDATION_SHARE) where it would take too much of the budget;
- coarse first (``CandidateSearch``): the cheapest candidate is measured first, the others are estimated from it
  with the cost model, and those that cannot fit or cannot be chosen are dropped before they are measured; the
  rest are measured from the most expensive down, within MEASURE_SHARE of the hours;
- the rule: the most expensive candidate (the most capacity and resolution) that fits and gets
  ``min_stage1_iterations`` Stage I iterations; if none does, the fitting one that gets the most.

Tests inject the throughput table (``BudgetOptions(throughput=...)``) or the measuring function, so planning is
deterministic there.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from diffoseg_auto.inference.prediction_cost import SamplingWork
from diffoseg_auto.plans.plans import Plans
from planners.budget_candidates import (Candidate, budget_batch_size, candidate_work, resolved_configuration,
                                        viable_candidates)
from planners.budget_schedule import (MIN_STAGE1_ITERATIONS, StageCost, choose_candidate, measuring_seconds,
                                      scaled_cost, stage_schedule)

logger = logging.getLogger(__name__)

MEASURE_SHARE = 0.1         # measuring the candidates takes at most this share of the hours
MEASURE_SECONDS = 3.0       # timing per measured piece, at most ...
MEASURE_SLOTS = 12          # ... and at most the measuring budget / this (the cheapest and about two more candidates)
VALIDATION_SHARE = 0.2      # the end-of-stage validation sampling (both stages) shrinks until it takes at most this
PREDICTION_SHARE = 0.05     # predicting one median case above this share of the hours prints the cheaper setting
MIN_VAL_SAMPLES = 2         # validation samples per case: GED needs pairs of samples
MIN_SAMPLING_STEPS = 10     # the smallest S measured below the planned 25 without a large loss (planning.md)
MIN_VAL_CASES = 50          # a seeded sample of held-out cases before the steps shrink; at most to MIN_VAL_CASES_LAST
MIN_VAL_CASES_LAST = 10
# An unmeasured candidate is dropped only if it cannot fit at this share of its estimate: the estimate extrapolates
# from the cheapest candidate, whose small convolutions cost more per multiply-accumulate on a CPU (BU-BIL's measured
# widths / 1 : / 2 was 2.8x where the model says 4x; planning.md)
ESTIMATE_MARGIN = 0.25


class TimeBudgetError(ValueError):
    pass


Measure = Callable[[Candidate, dict], tuple[Mapping, Mapping]]


@dataclass(frozen=True)
class BudgetOptions:
    """How to plan: ``throughput`` {candidate key: (stage1, stage2) costs} or ``measure`` (candidate, configuration)
    -> costs replace the real measuring (tests); ``force``: plan this candidate whatever the rule says (sweeps)."""

    stage1_fraction: float = 2 / 3
    min_stage1_iterations: int = MIN_STAGE1_ITERATIONS
    num_workers: int | None = None
    measure_seconds: float | None = None
    median_object_voxels: float | None = None
    num_cases: int | None = None
    force: Candidate | None = None
    throughput: Mapping[str, tuple[Mapping, Mapping]] | None = None
    measure: Measure | None = None


@dataclass(frozen=True)
class JobSpec:
    """What one fold's diffoseg_train runs, as the budget counts it."""

    seconds: float
    stage1_fraction: float
    stage1_plan: tuple[int, int]      # planned iterations, iterations per epoch
    stage2_plan: tuple[int, int]
    val_ratio: float                  # validation-loss batches per training iteration
    num_workers: int
    num_raters: int
    validation_cases: int             # the fold's held-out cases the end-of-stage validation samples


# ---------------------------------------------------------------------------------------------- prediction cost
@dataclass(frozen=True)
class CandidatePlan:
    """A candidate inserted into the plans under the budget configuration's name: typed (what the prediction cost
    reads) and its configuration resolved as a plain dict (what the schedule reads)."""

    plans: Plans
    name: str
    cfg: dict


def candidate_plan(plans: dict, name: str, config: dict) -> CandidatePlan:
    from diffoseg_auto.plans.plans import plans_from_dict

    typed = plans_from_dict(copy.deepcopy({**plans, "configurations": {**plans["configurations"], name: config}}))
    return CandidatePlan(typed, name, dataclasses.asdict(typed.get_configuration(name)))


def case_prediction_cost(cand: CandidatePlan, work: SamplingWork, row_s: float | None) -> dict:
    """Sampling one median case of ``cand`` for ``work`` at ``row_s`` seconds per denoiser row: the one place this
    module reads the prediction cost (diffoseg_auto/inference/prediction_cost.py, the predictors' own formula); the
    end-of-stage validation is such a prediction of each validation case."""
    from diffoseg_auto.inference.prediction_cost import median_preprocessed_shape, prediction_cost

    cfg = cand.plans.get_configuration(cand.name)
    cost = prediction_cost(cfg, median_preprocessed_shape(cand.plans, cand.name), cfg.inference.step_size,
                           cfg.inference.use_mirroring, 1, work)
    return {"windows": cost.windows, "network_evaluations": cost.network_evaluations,
            "seconds": float(cost.network_evaluations * (row_s or 0.0))}


# ---------------------------------------------------------------------------------------------- validation sizing
def shrink(settings: dict, order: list[tuple[str, int]], cost: Callable[[dict], float], limit: float) -> dict:
    """Lower the settings in ``order`` (key, floor), one after the other, each to the largest value that brings
    ``cost`` within ``limit`` or to its floor; the settings unchanged where they already fit."""
    s = dict(settings)
    for key, floor in order:
        while cost(s) > limit and s[key] > floor:
            s[key] -= 1
    return s


def validation_seconds(cand: CandidatePlan, costs: tuple[StageCost, StageCost], settings: dict, job: JobSpec) -> float:
    """End-of-stage validation of both stages on ``val_max_cases`` cases: Stage I samples ``num_val_samples`` per
    case, Stage II ``val_samples_per_rater`` per rater prompt (training/validation.py), each at ``val_sampling_steps``."""
    steps = settings["val_sampling_steps"]
    per_case = case_prediction_cost(cand, SamplingWork(steps, settings["num_val_samples"]),
                                    costs[0].denoiser_row_s)["seconds"]
    if job.stage1_fraction < 1:
        stage2 = SamplingWork(steps, 0, job.num_raters, settings["val_samples_per_rater"])
        per_case += case_prediction_cost(cand, stage2, costs[1].denoiser_row_s)["seconds"]
    return settings["val_max_cases"] * per_case


def planned_sampling(cfg: dict, cases: int) -> dict:
    """The validation settings of a resolved configuration (the planned ones: the inference settings unless the
    configuration sets the validation's own) for a fold of ``cases`` held-out cases."""
    t = cfg["training"]
    return {"num_val_samples": t["num_val_samples"],
            "val_samples_per_rater": t.get("val_samples_per_rater") or cfg["stage2"]["num_samples_per_rater"],
            "val_sampling_steps": t.get("val_sampling_steps") or cfg["diffusion"]["sampling_steps"],
            "val_max_cases": min(cases, t.get("val_max_cases") or cases)}


def size_validation(cand: CandidatePlan, costs: tuple[StageCost, StageCost], job: JobSpec) -> dict:
    """The validation settings that keep the end-of-stage validation within VALIDATION_SHARE of the budget: fewer
    validation samples first, then fewer samples per rater prompt, then a seeded sample of the held-out cases (to
    MIN_VAL_CASES), then fewer steps, then fewer cases (to MIN_VAL_CASES_LAST); each at least its floor. Only the
    validation reads them (training.val_*): diffoseg_predict keeps the planned sampling."""
    planned = planned_sampling(cand.cfg, job.validation_cases)
    cases = planned["val_max_cases"]
    order = [("num_val_samples", min(planned["num_val_samples"], MIN_VAL_SAMPLES)), ("val_samples_per_rater", 1),
             ("val_max_cases", min(cases, MIN_VAL_CASES)),
             ("val_sampling_steps", min(planned["val_sampling_steps"], MIN_SAMPLING_STEPS)),
             ("val_max_cases", min(cases, MIN_VAL_CASES_LAST))]
    settings = shrink(planned, order, lambda s: validation_seconds(cand, costs, s, job),
                      VALIDATION_SHARE * job.seconds)
    return {"cases": job.validation_cases, "settings": settings,
            "changed": {k: [planned[k], v] for k, v in settings.items() if v != planned[k]},
            "seconds": round(validation_seconds(cand, costs, settings, job), 1)}


# ---------------------------------------------------------------------------------------------- the whole job
def fit_job(cand: CandidatePlan, costs: tuple[StageCost, StageCost], job: JobSpec) -> dict:
    """The schedule of both stages in what the sized end-of-stage validation leaves of the budget, and the
    estimated seconds of the whole diffoseg_train (``within_hours``; ``fits``: within the hours with the validation
    within VALIDATION_SHARE of them, so that the budget trains more than it validates)."""
    validation = size_validation(cand, costs, job)
    train_s = job.seconds - validation["seconds"]
    st1 = stage_schedule(costs[0], train_s * job.stage1_fraction, *job.stage1_plan, job.val_ratio, job.num_workers)
    st2 = (stage_schedule(costs[1], train_s * (1 - job.stage1_fraction), *job.stage2_plan, job.val_ratio,
                          job.num_workers) if job.stage1_fraction < 1 else None)
    loops = st1["estimated_seconds"] + (st2["estimated_seconds"] if st2 else 0.0)
    total = loops + validation["seconds"]
    return {"stage1": st1, "stage2": st2, "validation": validation, "training_seconds": round(loops, 1),
            "estimated_seconds": round(total, 1), "within_hours": total <= job.seconds,
            "fits": total <= job.seconds and validation["seconds"] <= VALIDATION_SHARE * job.seconds}


# ---------------------------------------------------------------------------------------------- coarse first
class CandidateSearch:
    """Measure as few candidates as the rule needs, coarse first: the cheapest (by the cost model) is measured, the
    others are estimated from it and dropped when even at ESTIMATE_MARGIN of that estimate they cannot fit the
    budget or reach the rule's floor (so the rule could not choose them); the rest are measured from the most
    expensive down while the measuring budget lasts, until one fits and reaches the floor."""

    def __init__(self, resolved: dict[Candidate, CandidatePlan], job: JobSpec, measure: Measure, min_stage1_iterations: int,
                 measuring_budget_s: float, measure_seconds: float) -> None:
        self.resolved, self.job, self.measure = resolved, job, measure
        self.floor, self.budget_s, self.measure_seconds = min_stage1_iterations, measuring_budget_s, measure_seconds
        self.work = {c: candidate_work(cp.cfg) for c, cp in resolved.items()}
        self.rows: list[dict] = []
        self.dropped: list[dict] = []
        self.modelled_s = 0.0
        self._t0 = time.perf_counter()

    def spent_s(self) -> float:
        """Measuring time so far: the clock, or the model of the measuring where it says more (injected tables)."""
        return max(self.modelled_s, time.perf_counter() - self._t0)

    def _measure(self, cand: Candidate) -> dict:
        c1, c2 = self.measure(cand, self.resolved[cand].cfg)
        costs = (StageCost.from_mapping(c1), StageCost.from_mapping(c2))
        self.modelled_s += measuring_seconds(costs, self.measure_seconds, self.work[cand].batch)
        logger.info(f"{cand.key}: {costs[0].train_iteration_s:.3f} s / Stage I iteration, "
                    f"{costs[1].train_iteration_s:.3f} s / Stage II iteration")
        row = {"candidate": cand.key, "spacing_factor": cand.spacing_factor, "feature_divisor": cand.feature_divisor,
               "stage1_seconds_per_iteration": costs[0].train_iteration_s,
               "stage2_seconds_per_iteration": costs[1].train_iteration_s, **fit_job(self.resolved[cand], costs, self.job),
               "measured": {"stage1": dict(c1), "stage2": dict(c2)}, "_cand": cand, "_costs": costs}
        self.rows.append(row)
        return row

    def _estimate(self, cand: Candidate, factor: float = 1.0) -> tuple[StageCost, StageCost]:
        """``cand``'s costs scaled from the measured candidate nearest to it in convolutions."""
        near = min(self.rows, key=lambda r: abs(math.log(self.work[r["_cand"]].macs / self.work[cand].macs)))
        return tuple(scaled_cost(k, self.work[near["_cand"]], self.work[cand], factor) for k in near["_costs"])

    def _eligible(self, fit: dict) -> bool:
        return fit["fits"] and fit["stage1"]["iterations"] >= self.floor

    def _drop(self, cand: Candidate, reason: str, fit: dict | None = None) -> None:
        entry = {"candidate": cand.key, "reason": reason}
        if fit is not None:
            entry.update(estimated_stage1_iterations=fit["stage1"]["iterations"],
                         estimated_hours=round(fit["estimated_seconds"] / 3600, 3))
        self.dropped.append(entry)

    def run(self, force: Candidate | None = None) -> None:
        if force is not None:
            self._measure(force)
            return
        order = sorted(self.resolved, key=lambda c: (self.work[c].macs, -c.spacing_factor, -c.feature_divisor))
        self._measure(order[0])
        for c in order[1:]:
            fit = fit_job(self.resolved[c], self._estimate(c, ESTIMATE_MARGIN), self.job)
            if not self._eligible(fit):
                why = ("cannot fit the hours" if not fit["within_hours"] else
                       f"its validation exceeds {100 * VALIDATION_SHARE:g}% of the hours" if not fit["fits"] else
                       f"< {self.floor} Stage I iterations")
                self._drop(c, f"estimated before measuring: {why} even at {ESTIMATE_MARGIN:g} x its estimated cost", fit)
        left = [c for c in reversed(order[1:]) if c.key not in {d["candidate"] for d in self.dropped}]
        for i, c in enumerate(left):
            need = measuring_seconds(self._estimate(c), self.measure_seconds, self.work[c].batch)
            if self.spent_s() + need > self.budget_s:
                self._drop(c, f"not measured: ~{need:.0f} s more would exceed the measuring budget of "
                              f"{self.budget_s:.0f} s")
                continue
            if self._eligible(self._measure(c)):
                for rest in left[i + 1:]:
                    self._drop(rest, f"not measured: the more expensive {c.key} fits and reaches the floor")
                return

    def chosen(self) -> dict:
        """The rule among the measured candidates that fit; else among those whose job is within the hours (their
        validation takes more than its share); else the one with the shortest job."""
        for ok in ("fits", "within_hours"):
            rows = [r for r in self.rows if r[ok]]
            if rows:
                return choose_candidate(rows, self.floor)
        return min(self.rows, key=lambda r: r["estimated_seconds"])


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
def _job_spec(base_cfg: dict, hours: float, o: BudgetOptions, num_raters: int, workers: int) -> JobSpec:
    tr, s2 = base_cfg["training"], base_cfg["stage2"]
    return JobSpec(seconds=hours * 3600.0, stage1_fraction=o.stage1_fraction,
                   stage1_plan=(tr["num_epochs"] * tr["iterations_per_epoch"], tr["iterations_per_epoch"]),
                   stage2_plan=(s2["num_epochs"] * s2["iterations_per_epoch"], s2["iterations_per_epoch"]),
                   val_ratio=tr["num_val_iterations_per_epoch"] / max(1, tr["iterations_per_epoch"]),
                   num_workers=workers, num_raters=num_raters,
                   validation_cases=max(1, math.ceil((o.num_cases or 0) / 5)))


def _candidates(plans: dict, base: str, name: str, batch: int, o: BudgetOptions) -> tuple[dict, dict]:
    """(configuration, CandidatePlan) per candidate to consider, at the budget's batch."""
    cands = viable_candidates(plans, base, o.median_object_voxels)
    if o.force is not None:
        if o.force not in cands:
            raise TimeBudgetError(f"candidate {o.force.key} is not viable for '{base}' (viable: "
                                  f"{', '.join(c.key for c in cands)})")
        cands = {o.force: cands[o.force]}
    if o.throughput is not None:
        cands = {c: v for c, v in cands.items() if c.key in o.throughput}
        if not cands:
            raise TimeBudgetError("no candidate has a throughput entry; measure them (omit the injected table)")
    base_batch = resolved_configuration(plans, base)["batch_size"]
    for cfg in cands.values():
        if batch != base_batch:
            cfg["batch_size"] = batch
    return cands, {c: candidate_plan(plans, name, cfg) for c, cfg in cands.items()}


def _budget_configuration(cfg: dict, chosen: dict) -> dict:
    """The chosen candidate's configuration with its schedule and validation settings written in."""
    out = copy.deepcopy(cfg)
    st1, st2, val = chosen["stage1"], chosen["stage2"], chosen["validation"]["settings"]
    changed = chosen["validation"]["changed"]
    out["training"] = {**{k: st1[k] for k in ("num_epochs", "iterations_per_epoch", "num_val_iterations_per_epoch")},
                       "num_val_samples": val["num_val_samples"],
                       **{k: val[k] for k in ("val_samples_per_rater", "val_sampling_steps", "val_max_cases")
                          if k in changed}}  # only what the sizing lowered: the rest follows the inference settings
    if st2 is not None:
        out["stage2"] = {k: st2[k] for k in ("num_epochs", "iterations_per_epoch")}
    return out


def prediction_note(cand: CandidatePlan, costs: tuple[StageCost, StageCost], hours: float) -> dict:
    """The prediction of one median case at diffoseg_predict's defaults (Stage I samples and every rater's), and,
    where it exceeds PREDICTION_SHARE of the hours, the cheaper setting (fewer steps, then samples) that fits."""
    d, raters = cand.cfg["diffusion"], cand.plans.num_raters
    spr = cand.cfg["stage2"]["num_samples_per_rater"]
    settings = {"sampling_steps": d["sampling_steps"], "num_samples": d["num_samples"]}
    cost = lambda s: case_prediction_cost(cand, SamplingWork(s["sampling_steps"], s["num_samples"], raters, spr),  # noqa: E731
                                          costs[1].denoiser_row_s)
    now = cost(settings)
    note = {"windows_per_case": now["windows"], "network_evaluations_per_case": now["network_evaluations"],
            "prediction_seconds_per_case": round(now["seconds"], 1), "share_of_budget_limit": PREDICTION_SHARE}
    limit = PREDICTION_SHARE * hours * 3600
    if now["seconds"] > limit:
        cheaper = shrink(settings, [("sampling_steps", min(settings["sampling_steps"], MIN_SAMPLING_STEPS)),
                                    ("num_samples", min(settings["num_samples"], raters))],
                         lambda s: cost(s)["seconds"], limit)
        note["cheaper"] = {**cheaper, "prediction_seconds_per_case": round(cost(cheaper)["seconds"], 1)}
    return note


def plan_time_budget(plans: dict, base: str, hours: float, device: str = "cpu", name: str | None = None,
                     options: BudgetOptions | None = None) -> tuple[str, dict]:
    """(name, configuration dict) of the budget configuration (``options``: BudgetOptions)."""
    from diffoseg_auto.configuration import default_num_processes

    o = options or BudgetOptions()
    if not hours > 0:
        raise TimeBudgetError(f"--time_budget must be > 0 hours, got {hours}")
    if not 0 < o.stage1_fraction <= 1:
        raise TimeBudgetError(f"stage1_fraction must be in (0, 1], got {o.stage1_fraction}")
    if base not in plans["configurations"]:
        raise TimeBudgetError(f"configuration '{base}' is not in the plans (available: "
                              f"{', '.join(plans['configurations'])}); choose one with --time_budget_base")
    workers = default_num_processes() if o.num_workers is None else int(o.num_workers)
    name = name or f"{base}_budget_{hours:g}h"
    base_cfg = resolved_configuration(plans, base)
    batch = budget_batch_size(base_cfg["batch_size"], device)
    configs, resolved = _candidates(plans, base, name, batch, o)
    job = _job_spec(base_cfg, hours, o, len(plans["raters"]), workers)
    measuring_budget = MEASURE_SHARE * job.seconds
    seconds = o.measure_seconds or min(MEASURE_SECONDS, measuring_budget / MEASURE_SLOTS)
    measure = o.measure
    if measure is None and o.throughput is not None:
        measure = lambda c, cfg: o.throughput[c.key]  # noqa: E731
    if measure is None:
        measure = lambda c, cfg: measure_candidate(plans, name, configs[c], device, seconds)  # noqa: E731
    search = CandidateSearch(resolved, job, measure, o.min_stage1_iterations, measuring_budget, seconds)
    search.run(o.force)
    chosen = search.chosen()
    cand = chosen["_cand"]
    out = _budget_configuration(configs[cand], chosen)
    merged = candidate_plan(plans, name, out)
    out["notes"] = {"time_budget": {
        "hours": hours, "device": device, "device_name": device_description(device), "num_workers": workers,
        "stage1_fraction": round(o.stage1_fraction, 4), "base": base,
        "batch_size": {"planned": base_cfg["batch_size"], "used": batch,
                       "why": "the planned batch on a GPU; on a CPU at most budget_candidates.CPU_MAX_BATCH"},
        "rule": (f"forced candidate {chosen['candidate']}" if o.force is not None else
                 f"most expensive candidate that fits with >= {o.min_stage1_iterations} Stage I iterations, else the "
                 "fitting one with the most (documentation/planning.md, 'Time budget')"),
        "chosen": chosen["candidate"], "fits": chosen["fits"],
        "estimated_training_hours": round(chosen["training_seconds"] / 3600, 3),
        "estimated_job_hours": round(chosen["estimated_seconds"] / 3600, 3),
        "validation": chosen["validation"],
        "prediction": prediction_note(merged, chosen["_costs"], hours),
        "measuring": {"budget_seconds": round(measuring_budget, 1), "seconds_per_piece": round(seconds, 2),
                      "modelled_seconds": round(search.modelled_s, 1), "clock_seconds": round(search.spent_s(), 1)},
        "candidates": [{k: v for k, v in r.items() if not k.startswith("_")} for r in search.rows],
        "dropped": search.dropped}}
    return name, out


def add_time_budget_configuration(plans_file: Path, hours: float, device: str = "cpu", base: str | None = None,
                                  name: str | None = None, options: BudgetOptions | None = None) -> tuple[str, dict]:
    """Plan a budget configuration and write it into the plans JSON (atomically); prints the plan's summary."""
    from diffoseg_auto.errors import InvalidArgumentError
    from diffoseg_auto.utilities.file_ops import load_json, save_json

    plans = load_json(plans_file)
    if base is None:
        base = "3d_fullres" if "3d_fullres" in plans["configurations"] else "2d"
    fp = plans_file.parent / "dataset_fingerprint.json"
    fingerprint = load_json(fp) if fp.is_file() else {}
    o = options or BudgetOptions()
    if o.median_object_voxels is None and fingerprint:
        o = dataclasses.replace(o, median_object_voxels=median_object_voxels_of(fingerprint))
    if o.num_cases is None:
        o = dataclasses.replace(o, num_cases=fingerprint.get("num_cases"))
    try:
        name, config = plan_time_budget(plans, base, hours, device, name, o)
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
    """What the planner chose and what the whole diffoseg_train of one fold is estimated to take; the prediction
    cost of one case, with the cheaper setting where it exceeds PREDICTION_SHARE of the hours."""
    tb = config["notes"]["time_budget"]
    row = next(r for r in tb["candidates"] if r["candidate"] == tb["chosen"])
    s2, val, pred = row["stage2"], tb["validation"], tb["prediction"]
    lines = [f"time budget {tb['hours']:g} h on {tb['device']} ({tb['device_name']}): configuration '{name}' = "
             f"{tb['base']} with {tb['chosen']}, batch {tb['batch_size']['used']}",
             f"  Stage I {row['stage1']['num_epochs']} x {row['stage1']['iterations_per_epoch']} iterations"
             + (f", Stage II {s2['num_epochs']} x {s2['iterations_per_epoch']}" if s2 else "")
             + f": {tb['estimated_training_hours']:.2f} h; end-of-stage validation of {val['settings']['val_max_cases']} of {val['cases']} held-out cases "
             f"~{val['seconds'] / 60:.1f} min ({', '.join(f'{k} {v}' for k, v in val['settings'].items())}); "
             f"whole diffoseg_train ~{tb['estimated_job_hours']:.2f} h",
             f"  measured {len(tb['candidates'])} candidates in ~{tb['measuring']['clock_seconds']:.0f} s, dropped "
             f"{len(tb['dropped'])} unmeasured or unfit",
             f"  prediction ~{pred['prediction_seconds_per_case']} s per median case "
             f"({pred['network_evaluations_per_case']} network evaluations)"]
    if tb["estimated_job_hours"] > tb["hours"]:
        lines.append(f"  no candidate fits {tb['hours']:g} h: this one needs ~{tb['estimated_job_hours']:.2f} h")
    elif not tb["fits"]:
        lines.append(f"  the end-of-stage validation takes more than {100 * VALIDATION_SHARE:g}% of the hours even at "
                     "its fewest settings: diffoseg_train --no_final_validation keeps it out (diffoseg_train --val "
                     "runs it later)")
    if "cheaper" in pred:
        c = pred["cheaper"]
        lines.append(f"  predicting one median case takes more than {100 * pred['share_of_budget_limit']:g}% of "
                     f"{tb['hours']:g} h: use diffoseg_predict --sampling_steps {c['sampling_steps']} --num_samples "
                     f"{c['num_samples']} (~{c['prediction_seconds_per_case']} s per case)")
    return "\n".join(lines)
