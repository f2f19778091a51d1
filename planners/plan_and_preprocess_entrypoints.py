"""Console commands: diffoseg_plan_and_preprocess and its three steps on their own."""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from typing import Sequence

from diffoseg_auto.utilities.command_runner import run_command

logger = logging.getLogger(__name__)

DEFAULT_PLANNER = "planners.experiment_planner.ExperimentPlanner"
ALL_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")


def _add_dataset(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", nargs="+", required=True, help="dataset id(s) or name(s), e.g. 170 or Dataset170_NPC")


def _add_np(p: argparse.ArgumentParser) -> None:
    from diffoseg_auto.configuration import default_num_processes

    p.add_argument("-np", type=int, default=default_num_processes(),
                   help="worker processes (default: $diffoseg_def_n_proc, else min(2, CPUs); <= 1 runs in-process)")


def _add_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("-gpu_memory_target", type=float, default=8.0, help="GPU memory (GB) the batch/patch must fit")
    p.add_argument("-pl", default=DEFAULT_PLANNER, help="planner class as a dotted path (plug-in)")
    p.add_argument("-overwrite_plans_name", default=None, help="plans name (default: the planner's, DiffOSegPlans)")
    p.add_argument("--time_budget", type=float, default=None, metavar="HOURS",
                   help="also add a configuration whose whole diffoseg_train of one fold (both stages, validation, "
                        "checkpoints) fits HOURS on -device (planners/time_budget.py; measured on this machine, in at "
                        "most a tenth of HOURS)")
    p.add_argument("-device", default=None,
                   help="--time_budget: the device the budget is for and measured on (cpu, cuda, cuda:N; "
                        "default: cuda when available, else cpu)")
    p.add_argument("--time_budget_base", default=None,
                   help="--time_budget: the planned configuration it derives from (default 3d_fullres, else 2d)")
    p.add_argument("--time_budget_name", default=None,
                   help="--time_budget: the new configuration's name (default <base>_budget_<HOURS>h)")


def _add_preprocess(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", nargs="+", default=list(ALL_CONFIGURATIONS),
                   help="configurations to preprocess (those the plans do not contain are skipped)")
    p.add_argument("-plans_name", default="DiffOSegPlans", help="plans file to preprocess with")


def run_fingerprint(datasets: Sequence[str], num_processes: int, verify: bool, clean: bool) -> None:
    from planners.fingerprint import extract_fingerprint_dataset

    for d in datasets:
        logger.info(f"Fingerprint of {d}")
        extract_fingerprint_dataset(d, num_processes, clean=clean, verify_integrity=verify)


def run_planning(datasets: Sequence[str], planner: str, gpu_gb: float, plans_name: str | None) -> list[str]:
    from planners.experiment_planner import plan_experiment

    names = []
    for d in datasets:
        plans = plan_experiment(d, planner, gpu_gb, plans_name)
        names.append(plans.plans_name)
        for name, c in plans.configurations.items():
            logger.info(f"{plans.dataset_name} {name}: patch {c.patch_size}, batch {c.batch_size}, "
                  f"stages {c.architecture.n_stages}, spacing {[round(s, 4) for s in c.spacing]}")
    return names


def run_time_budget(datasets: Sequence[str], plans_name: str, hours: float, device: str, base: str | None,
                    name: str | None) -> list[str]:
    """Add the time-budget configuration to each dataset's plans; returns the configuration names."""
    from pathlib import Path

    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.runtime.device import device_problem, resolve_device
    from diffoseg_auto.utilities.argument_checks import raise_problems
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from planners.time_budget import add_time_budget_configuration

    raise_problems([device_problem(device)])
    dev = str(resolve_device(device))
    names = []
    for d in datasets:
        plans_file = Path(preprocessed_root()) / resolve_dataset_name(d) / f"{plans_name}.json"
        names.append(add_time_budget_configuration(plans_file, hours, dev, base, name)[0])
    return names


def run_preprocessing(datasets: Sequence[str], configurations: Sequence[str], plans_name: str, num_processes: int,
                      clean: bool) -> None:
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.plans.plans import load_plans
    from diffoseg_auto.preprocessing.preprocessor import DefaultPreprocessor
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name

    for d in datasets:
        name = resolve_dataset_name(d)
        plans = load_plans(preprocessed_root() / name / f"{plans_name}.json")
        for c in configurations:
            if c not in plans.configurations:
                logger.warning(f"{name}: configuration '{c}' is not in the plans (e.g. 3d configurations of 2D data); skipped")
                continue
            pp = DefaultPreprocessor(plans, c)
            if clean and pp.output_folder(name).is_dir():
                shutil.rmtree(pp.output_folder(name))
            out = pp.run(name, num_processes)
            logger.info(f"{name} {c}: preprocessed into {out}")


def plan_and_preprocess(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Fingerprint, plan and preprocess multi-rater dataset(s).")
    _add_dataset(p)
    _add_np(p)
    _add_plan(p)
    _add_preprocess(p)
    p.add_argument("--verify_dataset_integrity", action="store_true", help="check the raw dataset first")
    p.add_argument("--clean", action="store_true", help="recompute the fingerprint and overwrite preprocessed data")
    p.add_argument("--no_pp", action="store_true", help="fingerprint and plan only")
    a = p.parse_args(argv)
    run_fingerprint(a.d, a.np, a.verify_dataset_integrity, a.clean)
    names = run_planning(a.d, a.pl, a.gpu_memory_target, a.overwrite_plans_name)
    configurations = list(a.c)
    if a.time_budget is not None:
        configurations += [c for c in run_time_budget(a.d, names[0], a.time_budget, a.device, a.time_budget_base,
                                                      a.time_budget_name) if c not in configurations]
    if not a.no_pp:
        run_preprocessing(a.d, configurations, names[0], a.np, a.clean)


def extract_fingerprint(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Compute dataset_fingerprint.json for raw dataset(s).")
    _add_dataset(p)
    _add_np(p)
    p.add_argument("--verify_dataset_integrity", action="store_true")
    p.add_argument("--clean", action="store_true", help="recompute even if a fingerprint exists")
    a = p.parse_args(argv)
    run_fingerprint(a.d, a.np, a.verify_dataset_integrity, a.clean)


def plan_experiment(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write DiffOSegPlans.json from an existing fingerprint.")
    _add_dataset(p)
    _add_plan(p)
    a = p.parse_args(argv)
    names = run_planning(a.d, a.pl, a.gpu_memory_target, a.overwrite_plans_name)
    if a.time_budget is not None:
        run_time_budget(a.d, names[0], a.time_budget, a.device, a.time_budget_base, a.time_budget_name)


def preprocess(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Preprocess raw dataset(s) with existing plans.")
    _add_dataset(p)
    _add_np(p)
    _add_preprocess(p)
    p.add_argument("--clean", action="store_true", help="delete existing preprocessed data of the configuration first")
    a = p.parse_args(argv)
    run_preprocessing(a.d, a.c, a.plans_name, a.np, a.clean)


if __name__ == "__main__":  # python -m: user errors as one line, as from the console script
    sys.exit(run_command("diffoseg_plan_and_preprocess", plan_and_preprocess))
