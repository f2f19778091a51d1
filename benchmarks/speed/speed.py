"""Speed against the anchors: preprocessing against nnU-Net v2, a training iteration and sampling against the
paper's reference configuration, prediction against an earlier revision of this code.

    python benchmarks/speed/speed.py preprocess --setup --cases 24 --size 64 -np 2 --repeats 2 --phases
    python benchmarks/speed/speed.py train --iterations 3 --plans PLANS.json --configuration 2d
    python benchmarks/speed/speed.py sampling --plans PLANS.json --precision auto fp32 --with_compile --repeats 3
    python benchmarks/speed/speed.py profile --precision bf16 fp32
    python benchmarks/speed/speed.py prediction --steps 3 --threads 1 --with_fp32 --norm_ab

Each subcommand's --help says what it compares; its code is speed_<subcommand>.py. Numbers are recorded (documentation/results.md, sections 3
and 4); nothing passes or fails.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if not __package__:  # run by path, not with -m: make the package `benchmarks` importable (benchmarks/README.md)
    sys.path.append(str(Path(__file__).resolve().parents[2]))

from benchmarks.speed.speed_prediction import PREDICTION_WORKER, prediction, prediction_worker
from benchmarks.speed.speed_preprocess import DEFAULT_VENV, preprocess
from benchmarks.speed.speed_sampling import profile, sampling
from benchmarks.speed.speed_train import TRAIN_NETWORKS, train


# ================================================================ command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/speed/speed.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.set_defaults(func=func, parser=c)
        return c

    c = command("preprocess", preprocess, "fingerprint + planning + preprocessing: diffoseg_plan_and_preprocess against "
                "nnUNetv2_plan_and_preprocess on the same generated 3D toy dataset (ours: all raters; nnU-Net: one "
                "rater's labels), fresh subprocesses, same workers and configurations, rounds interleaved")
    c.add_argument("--cases", type=int, default=24, help="number of toy cases")
    c.add_argument("--size", type=int, default=64, help="edge length of the cubic toy images")
    c.add_argument("--raters", type=int, default=4, help="raters in our dataset")
    c.add_argument("--rater", type=int, default=0, help="whose labels nnU-Net gets (must have annotated every case)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("-np", "--num_processes", type=int, default=2, help="worker processes for both tools")
    c.add_argument("-c", "--configurations", nargs="+", default=["3d_fullres"], help="configurations to preprocess (both tools)")
    c.add_argument("--repeats", type=int, default=2, help="timed rounds (each: ours then nnU-Net)")
    c.add_argument("--phases", action="store_true",
                   help="after the timed rounds, also time fingerprint, planning and preprocessing as separate commands")
    c.add_argument("--nnunet_venv", default=str(DEFAULT_VENV), help="virtual environment with nnunetv2")
    c.add_argument("--setup", action="store_true", help="create the nnU-Net venv if missing (pip, no torch download)")
    c.add_argument("--work_dir", default=None, help="parent of the temporary working folder (default: system temp)")
    c.add_argument("--keep", action="store_true", help="keep the working folder (datasets, outputs, logs)")
    c.add_argument("--json_out", default=None, help="also write the numbers to this JSON file")

    c = command("train", train, "seconds per training iteration, per sampling step and per encode of the planned 2D "
                "128x128 denoiser (cached_encoder and concat layouts) against the paper's reference network, each in "
                "its own process, with parameters and peak memory")
    c.add_argument("--iterations", type=int, default=3, help="timed iterations per measurement (after 1 warm-up)")
    c.add_argument("--batch-size", type=int, default=None, help="default: the planned batch size (12 without plans); the paper used 32")
    c.add_argument("--stage", type=int, default=1, choices=(1, 2))
    c.add_argument("--devices", default=None, help="comma separated, default: cpu (+ cuda when available)")
    c.add_argument("--configs", default=",".join(TRAIN_NETWORKS), help=f"comma separated subset of {TRAIN_NETWORKS}")
    c.add_argument("--plans", default=None, help="DiffOSegPlans.json whose 2D configuration to benchmark")
    c.add_argument("--configuration", default="2d")
    c.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    c.add_argument("--_device", default="cpu", help=argparse.SUPPRESS)

    c = command("sampling", sampling, "LIDC sampling: 10 Stage I samples of one 128x128 image with the planned '2d' "
                "(25 steps) and '2d_paper_reference' (250 steps) networks side by side, per precision; CPU and wall "
                "seconds and the ratio")
    c.add_argument("--plans", default=None, help="DiffOSegPlans.json holding '2d' and '2d_paper_reference' "
                   "(default: the planner's plans for the LIDC subset, reference added)")
    c.add_argument("--num_samples", type=int, default=10)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--precision", nargs="+", default=[None], help="autocast per run, e.g. auto fp32 (default: the plans')")
    c.add_argument("--with_compile", action="store_true",
                   help="also ours under torch.compile (--compile of diffoseg_predict); the reference is not compiled")
    c.add_argument("--steps", type=int, default=None, help="our sampling steps (default: the plans' S)")
    c.add_argument("--repeats", type=int, default=1, help="timed runs per network, alternating; the median is reported")
    c.add_argument("--json_out", default=None)
    c.add_argument("--md", default=None, help="also write the speed-up table (Markdown) to this file")
    c.add_argument("--render", nargs="+", default=None, metavar="JSON",
                   help="only render the table from these --json_out files (e.g. one run per precision)")

    c = command("profile", profile, "one sampling step of the planned '2d' decoder per precision: operator self CPU "
                "time (torch.profiler), the dtypes each operator ran in under autocast, and the share of layout and "
                "dtype conversions")
    c.add_argument("--plans", default=None, help="DiffOSegPlans.json (default: the planner's plans for the LIDC subset)")
    c.add_argument("--configuration", default="2d")
    c.add_argument("--num_samples", type=int, default=10)
    c.add_argument("--steps", type=int, default=5, help="profiled sampling steps (after a 2-step warm-up)")
    c.add_argument("--precision", nargs="+", default=["bf16", "fp32"])
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--top", type=int, default=15, help="operators listed per precision")
    c.add_argument("--json_out", default=None)
    c.add_argument("--md", default=None, help="also write the profile tables (Markdown) to this file")

    c = command("prediction", prediction, "prediction of a BU-BIL-sized image (406x512, 3x3 windows, N samples + 10 "
                "prompts): this checkout against an earlier revision (git archive), each in its own process, same "
                "weights, seed and settings; --scaling: how the time grows with image size, raters and 3D")
    c.add_argument("--old_rev", default="merge-base", help="git revision of today's code (default: git merge-base HEAD main)")
    c.add_argument("--steps", type=int, default=5, help="sampling steps, the same for every run (default 5)")
    c.add_argument("--with_fp32", action="store_true", help="also the new path at fp32, the old code's precision")
    c.add_argument("--num_samples", type=int, default=10, help="Stage I samples (default 10; prompts: all 10 raters)")
    c.add_argument("--samples_3d", type=int, default=2, help="samples and prompts of the 3D scaling rows (default 2)")
    c.add_argument("--tta", action="store_true", help="mirroring TTA in the old/new comparison")
    c.add_argument("--threads", type=int, default=1, help="torch threads of every run (default 1)")
    c.add_argument("--skip_compare", action="store_true")
    c.add_argument("--scaling", action="store_true", help="also the scaling table (this checkout)")
    c.add_argument("--norm_ab", action="store_true",
                   help="also this checkout's stock instance norm against the channels-last one (fp32 and auto)")
    c.add_argument("--json_out", default=None)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 2 and argv[0] == PREDICTION_WORKER:  # one prediction run inside the code root of PYTHONPATH
        print(json.dumps(prediction_worker(json.loads(argv[1]))))
        return
    a = build_parser().parse_args(argv)
    a.func(a)


if __name__ == "__main__":
    main()
