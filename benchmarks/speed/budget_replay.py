"""Replay the time-budget planner on a prepared dataset's plans without timing: every candidate's cost from the
cost model (planners/budget_candidates.candidate_work) anchored at one measured candidate's seconds per training
iteration and per denoiser row; prints what the planner would choose at each budget, its estimate of the whole
diffoseg_train, and what it would measure and drop (planning.md, "Time budget"). A model, not a timing.

    python benchmarks/speed/budget_replay.py -d 101 --hours 0.1 0.5 2 --anchor 1,2 --train_s 11.7 --row_s 0.111
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run by path, not with -m: make the package `benchmarks` importable (benchmarks/README.md)
    sys.path.append(str(Path(__file__).resolve().parents[2]))

from benchmarks.lib.bench_lib import PLANS, set_env


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-d", "--dataset_id", type=int, required=True, help="a dataset planned in $diffoseg_preprocessed")
    p.add_argument("-c", "--configuration", default="2d", help="the planned configuration (default 2d)")
    p.add_argument("--hours", type=float, nargs="+", required=True)
    p.add_argument("--anchor", required=True, metavar="SPACING_FACTOR,WIDTH_DIVISOR",
                   help="the candidate whose costs were measured, e.g. 1,2")
    p.add_argument("--train_s", type=float, required=True, help="its seconds per training iteration")
    p.add_argument("--row_s", type=float, required=True, help="its seconds per denoiser row (prediction)")
    p.add_argument("--val_share", type=float, default=1 / 3,
                   help="a validation-loss batch as a share of a training iteration (default 1/3: forward only)")
    p.add_argument("--checkpoint_s", type=float, default=0.0, help="its seconds per checkpoint (default 0)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="the device the plan is for (the batch)")
    p.add_argument("--work", default=None, help="the folder whose preprocessed/ holds the dataset")
    return p


def anchored_table(plans: dict, base: str, device: str, a: argparse.Namespace) -> dict:
    """{candidate key: (Stage I, Stage II) costs} in proportion to the cost model, equal to the anchor's there."""
    from planners.budget_candidates import (budget_batch_size, candidate_work, resolved_configuration,
                                            viable_candidates)

    batch = budget_batch_size(resolved_configuration(plans, base)["batch_size"], device)
    work = {}
    for c, cfg in viable_candidates(plans, base).items():
        cfg["batch_size"] = batch
        work[c.key] = candidate_work(resolved_configuration(
            {**plans, "configurations": {**plans["configurations"], "x": cfg}}, "x"))
    anchor = work["spacing_x{}_widths_div{}".format(*a.anchor.split(","))]
    table = {}
    for key, w in work.items():
        r = w.macs / anchor.macs
        cost = {"train_iteration_s": a.train_s * r, "val_iteration_s": a.train_s * r * a.val_share,
                "augmentation_s": 0.0, "checkpoint_s": a.checkpoint_s * w.parameters / anchor.parameters,
                "denoiser_row_s": a.row_s * r * anchor.batch / w.batch}
        table[key] = (cost, cost)
    return table


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    if a.work:
        set_env(Path(a.work))
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from diffoseg_auto.utilities.file_ops import load_json
    from planners.time_budget import BudgetOptions, budget_summary, median_object_voxels_of, plan_time_budget

    folder = preprocessed_root() / resolve_dataset_name(a.dataset_id)
    plans, fingerprint = load_json(folder / f"{PLANS}.json"), load_json(folder / "dataset_fingerprint.json")
    table = anchored_table(plans, a.configuration, a.device, a)
    for hours in a.hours:
        options = BudgetOptions(throughput=table, num_workers=0, num_cases=fingerprint.get("num_cases"),
                                median_object_voxels=median_object_voxels_of(fingerprint))
        name, config = plan_time_budget(plans, a.configuration, hours, a.device, options=options)
        print(budget_summary(name, config))
        for d in config["notes"]["time_budget"]["dropped"]:
            print(f"    {d['candidate']}: {d['reason']}")


if __name__ == "__main__":
    main()
