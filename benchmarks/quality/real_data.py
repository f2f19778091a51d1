"""Real-data quality: DiffOSeg against the baselines at the same CPU budget, and its sweeps.

    # LIDC subset (converted and preprocessed by --prepare lidc), 5 folds, 30 CPU minutes per method and fold
    nohup python benchmarks/quality/real_data.py compare --prepare lidc -d 100 -c 2d -f 0 1 2 3 4 --minutes 30 \\
        --out /tmp/cmp_lidc > /tmp/cmp_lidc.log 2>&1 &
    # the same with a time-budget configuration planned for 0.5 h per method and fold on this CPU
    python benchmarks/quality/real_data.py compare -d 100 -c 2d -f 0 1 2 3 4 --time_budget 0.5 --out /tmp/cmp_lidc_tb
    # the held-out test: each method trained once on all training cases, scored on 300 sampled test cases
    python benchmarks/quality/real_data.py test -d 100 -c 2d --time_budget 1 --test_sample 300 --seed 0 --out /tmp/test_lidc \
        --record documentation/experiments/records
    # Stage I against the number of sampling steps (and mirroring TTA) of a trained fold
    python benchmarks/quality/real_data.py steps --work /tmp/lidc -d 100 -c 2d -f 0 --steps 5 10 25 50 --tta
    # keep every scored fold in the repository (runs of several sessions add up), and merge the records
    python benchmarks/quality/real_data.py compare -d 100 -c 2d -f 0 1 --time_budget 0.5 --out /tmp/cmp_lidc_tb \
        --record documentation/experiments/records
    python benchmarks/quality/real_data.py records documentation/experiments/records/Dataset100_LIDC/2d_0.5h_*
    # the paper's Stage II prompt block against the default from the same Stage I (after compare, same --work)
    python benchmarks/quality/real_data.py prompt_blocks --work /tmp/lidc -d 100 -c 2d -f 0 1 2 3 4 --out /tmp/blocks

``compare`` (the code of each subcommand is real_data_<compare|test|steps|blocks|sweep|records|routes>.py): for
every fold and every method (``-tr``, default DiffOSeg and the three baselines) it trains with a budget of
``--minutes`` CPU minutes on ONE CPU thread (DiffOSeg splits them between Stage I and Stage II by
``--stage1_fraction``, a baseline has one stage and gets all of them; ``--time_budget HOURS`` instead plans a
configuration from ``-c`` whose two stages fit the hours on this CPU, planners/time_budget.py), predicts the
fold's held-out images with diffoseg_predict into ``<results>/<Dataset>/<TR>__<P>__<C>/fold_<f>/val_predictions``
(N samples, every rater prompt, no TTA unless ``--tta``), and then writes the methods x metrics table of
``diffoseg_benchmark -tr ...`` (with the all-empty, majority-repeated and inter-rater rows) into ``--out``; the
table is refreshed after every method of every fold, so a background run can be read while it goes on. Trained folds and
finished predictions are reused (``--retrain`` trains again). Plans overrides: ``--add_configuration`` adds one
of the CPU configurations below as ``-c``; any other override is a configuration the user adds to the plans
JSON (``{"inherits_from": "2d", ...}``) and names with ``-c``.

Without ``--work`` the tool uses the environment's $diffoseg_raw / _preprocessed / _results.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

if not __package__:  # run by path, not with -m: make the package `benchmarks` importable (benchmarks/README.md)
    sys.path.append(str(Path(__file__).resolve().parents[2]))

from benchmarks.lib.bench_lib import one_thread_default, set_env
from benchmarks.quality.real_data_blocks import prompt_blocks
from benchmarks.quality.real_data_compare import add_compare_arguments, compare
from benchmarks.quality.real_data_records import add_records_parser
from benchmarks.quality.real_data_routes import add_routes_parser
from benchmarks.quality.real_data_steps import steps
from benchmarks.quality.real_data_test import add_test_arguments, held_out_test
from benchmarks.quality.real_data_sweep import budget_sweep


# ---------------------------------------------------------------- command line

def build_parser(prog: str = "benchmarks/quality/real_data.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="DiffOSeg and the baselines, same CPU budget per method and fold",
                       description="Train every method (-tr) on every fold at the same CPU budget (--minutes, or "
                                   "--time_budget hours of a planned configuration), predict the held-out images "
                                   "and write the diffoseg_benchmark comparison into --out after every method.")
    add_compare_arguments(c)
    c.set_defaults(func=compare, parser=c)
    t = sub.add_parser("test", help="the held-out test: every method trained once on all training cases, scored on "
                                    "a seeded sample of the test cases (imagesTs/labelsTs)",
                       description="Train every method (-tr) once on all training cases (fold all) at the same CPU "
                                   "budget (--minutes, or --time_budget hours of a planned configuration), predict a "
                                   "fixed, seeded sample of the dataset's test cases and score every row on it "
                                   "against labelsTs (mean ± standard error over the cases, DiffOSeg's paired GED "
                                   "differences); writes --out/test_comparison.md/.csv/.json after every method.")
    add_test_arguments(t)
    t.set_defaults(func=held_out_test, parser=t)
    s = sub.add_parser("steps", help="Stage I quality against the number of sampling steps S (and mirroring TTA)",
                       description="Predict a fold's held-out cases at every S (Stage I only), score them (strict, "
                                   "mean ± standard error over cases, whole-mask fraction) with the all-empty, "
                                   "majority-repeated and inter-rater rows on the same cases; writes "
                                   "<work>/steps_sweep_d<d>_<c>_f<f>.json. --work holds raw/, preprocessed/ and results/ "
                                   "of a trained model.")
    s.add_argument("--work", required=True)
    s.add_argument("-d", type=int, required=True)
    s.add_argument("-c", default="2d")
    s.add_argument("-f", type=int, default=0)
    s.add_argument("--steps", nargs="+", type=int, default=[5, 10, 25, 50])
    s.add_argument("--num_samples", type=int, default=None, help="default: the plans' diffusion.num_samples")
    s.add_argument("--tta", action="store_true", help="also predict at the planned S with mirroring")
    s.add_argument("--samples_per_rater", nargs="*", type=int, default=[],
                   help="also strict per-rater Dice against these Stage II samples per rater prompt")
    s.add_argument("--score_only", action="store_true", help="score the existing predictions, do not sample again")
    s.set_defaults(func=steps)
    b = sub.add_parser("prompt_blocks", help="the paper's Stage II prompt block against the default, same Stage I",
                       description=prompt_blocks.__doc__.replace("``", "") + " Results: --out/prompt_blocks.json "
                                   "and .md (strict per-rater Dice, rows with the maximum on the diagonal, mean "
                                   "diagonal minus off-diagonal, rater-area Spearman).")
    b.add_argument("--work", required=True, help="the --work folder of compare")
    b.add_argument("-d", "--dataset_id", type=int, required=True)
    b.add_argument("-c", "--configuration", required=True)
    b.add_argument("-f", "--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    b.add_argument("--minutes", type=float, default=5 / 3, help="Stage II CPU minutes of the paper block")
    b.add_argument("--sampling_steps", type=int, default=None)
    b.add_argument("--out", required=True)
    b.add_argument("--render_only", action="store_true", help="re-render --out's table (residual iterations "
                   "from --comparison_out's run.json, written after each comparison fold)")
    b.add_argument("--comparison_out", default=None, help="compare's --out (for the residual block's Stage II "
                   "iterations in its run.json)")
    b.set_defaults(func=prompt_blocks)
    w = sub.add_parser("budget_sweep", help="the time-budget rule's sweep table from compare --time_budget outputs",
                       description=budget_sweep.__doc__)
    w.add_argument("outs", nargs="+", help="--out folders of compare --time_budget runs")
    w.add_argument("--work", default=None, help="the runs' --work folder (else the environment's folders)")
    w.add_argument("--md", default=None, help="also write the table to this file")
    w.set_defaults(func=lambda a: (set_env(Path(a.work)) if a.work else None, budget_sweep(a)))
    add_records_parser(sub)
    add_routes_parser(sub)
    return p


def main(argv: list[str] | None = None, prog: str = "benchmarks/quality/real_data.py") -> None:
    one_thread_default()  # one thread per run: before numpy / torch load (nothing above imports them)
    argv = sys.argv[1:] if argv is None else list(argv)
    a = build_parser(prog).parse_args(argv)
    a.command_line = f"python {prog} " + shlex.join(argv)  # recorded in run.json / prompt_blocks.json
    a.func(a)


if __name__ == "__main__":  # a broken record (real_data_records.RecordError) or input: one line, exit 1
    from diffoseg_auto.utilities.command_runner import run_command

    sys.exit(run_command("real_data.py", main))
