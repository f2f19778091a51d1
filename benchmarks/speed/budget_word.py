"""The planner's word for the whole ``diffoseg_train``: plan ``--time_budget H`` on this machine, then run the
commands a user runs next (``diffoseg_preprocess -c <that configuration>``, not counted, then
``diffoseg_train D <that configuration> F``: both stages, the per-epoch validation loss,
the end-of-stage validation sampling, checkpoints) and compare its wall time with the plan's estimate.

    python benchmarks/speed/budget_word.py -d 100 --hours 0.1 0.25 --out /tmp/word --record documentation/experiments/records/budget_word.json

Prints and appends one row per budget: the measuring time (goal: at most a tenth of H), the planned job hours, the
measured hours and the planner's word (measured / planned - 1; goal: within 15% of H). Numbers are recorded, not
pass/fail. The training runs as its own process with the environment of this one (set OMP_NUM_THREADS as a user
would); the machine's other load is not controlled and is stated with the record.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if not __package__:  # run by path, not with -m: make the package `benchmarks` importable (benchmarks/README.md)
    sys.path.append(str(ROOT))

from benchmarks.quality.real_data_records import revision  # noqa: E402  (after the path set-up)


def _command(name: str, *args: str) -> None:
    """A console script of this checkout, as its own process (the command a user types)."""
    code = f"import sys; from diffoseg_auto.cli.console import {name}; sys.argv[0] = '{name}'; {name}()"
    subprocess.run([sys.executable, "-c", code, *args], check=True, cwd=ROOT)


def plan(dataset: int, hours: float, name: str) -> tuple[dict, float]:
    """diffoseg_plan_experiment --time_budget (in this process); returns the configuration's notes and the seconds."""
    from diffoseg_auto.paths import preprocessed_root
    from diffoseg_auto.utilities.dataset_name_id import resolve_dataset_name
    from diffoseg_auto.utilities.file_ops import load_json

    t0 = time.time()
    _command("diffoseg_plan_experiment", "-d", str(dataset), "--time_budget", str(hours), "-device", "cpu",
             "--time_budget_name", name)
    seconds = time.time() - t0
    plans = load_json(preprocessed_root() / resolve_dataset_name(dataset) / "DiffOSegPlans.json")
    return plans["configurations"][name]["notes"]["time_budget"], seconds


def preprocess(dataset: int, name: str) -> float:
    """diffoseg_preprocess of the planned configuration (a coarser spacing has data of its own; a user runs it
    between planning and training, outside the budget of diffoseg_train); returns the seconds."""
    t0 = time.time()
    _command("diffoseg_preprocess", "-d", str(dataset), "-c", name, "-np", "1")
    return time.time() - t0


def train(dataset: int, configuration: str, fold: int) -> float:
    """The whole diffoseg_train of one fold, as a user runs it (a fresh start); returns wall seconds."""
    t0 = time.time()
    _command("diffoseg_train", str(dataset), configuration, str(fold), "-device", "cpu", "--overwrite")
    return time.time() - t0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/speed/budget_word.py", description=__doc__.splitlines()[0])
    p.add_argument("-d", type=int, default=None, help="a preprocessed dataset (its 2d or 3d_fullres plans)")
    p.add_argument("--hours", type=float, nargs="+", default=[])
    p.add_argument("-f", type=int, default=0, help="the fold trained")
    p.add_argument("--out", required=True, help="folder for budget_word.json and .md")
    p.add_argument("--record", default=None, help="also append the rows to this JSON file (kept in the repository)")
    p.add_argument("--render", default=None, metavar="RECORD",
                   help="only write the table of a record file (e.g. for fill_markers.py) into --out/budget_word.md")
    return p


def table(rows: list[dict]) -> str:
    """The planner's-word table of the rows (one per dataset and budget)."""
    lines = ["| dataset | H | chosen candidate | measuring: min (share of H) | planned job h | measured job h | word | vs H | date, revision |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['dataset']} | {r['hours']:g} | {r['chosen']} | {r['planning_minutes']} ({r['measuring_share_of_H']:.0%}) "
              f"| {r['planned_job_hours']} | {r['measured_job_hours']} | {r['word']:+.0%} | {r['against_H']:+.0%} "
              f"| {r['date']}, {r['revision']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.render:
        (out / "budget_word.md").write_text(table(json.loads(Path(a.render).read_text())))
        print((out / "budget_word.md").read_text(), end="")
        return 0
    if a.d is None or not a.hours:
        p.error("give -d and --hours (or --render RECORD)")
    rows = []
    for hours in a.hours:
        name = f"word_{hours:g}h"
        notes, plan_s = plan(a.d, hours, name)
        preprocess_s = preprocess(a.d, name)
        train_s = train(a.d, name, a.f)
        planned_h = notes.get("estimated_job_hours", notes.get("estimated_training_hours"))
        row = {"dataset": a.d, "hours": hours, "configuration": name, "chosen": notes.get("chosen"),
               "planning_minutes": round(plan_s / 60, 2), "measuring_share_of_H": round(plan_s / (3600 * hours), 3),
               "preprocessing_minutes": round(preprocess_s / 60, 2),
               "planned_job_hours": planned_h, "measured_job_hours": round(train_s / 3600, 3),
               "word": round(train_s / 3600 / planned_h - 1, 3) if planned_h else None,
               "against_H": round(train_s / 3600 / hours - 1, 3),
               "validation_changed": (notes.get("validation") or {}).get("changed"),
               "device_name": notes.get("device_name"), "num_workers": notes.get("num_workers"),
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "revision": revision(),
               "date": date.today().isoformat(), "command": " ".join(["python", "benchmarks/speed/budget_word.py",
                                                                       *(argv or sys.argv[1:])])}
        rows.append(row)
        print(json.dumps(row), flush=True)
        (out / "budget_word.json").write_text(json.dumps(rows, indent=2))
        if a.record:
            rec = Path(a.record)
            old = json.loads(rec.read_text()) if rec.is_file() else []
            rec.parent.mkdir(parents=True, exist_ok=True)
            rec.write_text(json.dumps(old + [row], indent=2))
    (out / "budget_word.md").write_text(table(rows))
    print(table(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
