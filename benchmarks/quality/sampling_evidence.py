"""The planner's sampling evidence: GED against the sampling steps S and strict per-rater Dice against the samples
per rater prompt, from the outputs of `toy_proof.py run` (toy_rater_styles.json) and `real_data.py steps`
(steps_sweep_*.json).

    python benchmarks/quality/sampling_evidence.py /work/runs/toy_s*/toy_rater_styles.json /work/runs/steps_sweep_*.json \\
        --out planners/sampling_evidence.json --md /tmp/sampling_curves.md
    # curves of a later session added to the committed evidence
    python benchmarks/quality/sampling_evidence.py /work/runs/steps_sweep_*_f1.json --add_to planners/sampling_evidence.json \\
        --out planners/sampling_evidence.json

Only the tuning seed (toy seed 0) and the tuning fold (fold 0) become the planner's curves; every other file is kept
under "reported" (the same curves on data nobody tuned on), which the rule never reads. The planner applies the
one-standard-error rule to the curves (planners/sampling_budget.py); ``--md`` writes the tables of results.md with
each curve's pick.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

if not __package__:  # run by path, not with -m: make the package `benchmarks` importable (benchmarks/README.md)
    sys.path.append(str(Path(__file__).resolve().parents[2]))

from benchmarks.lib.bench_lib import markdown_table

ROOT = Path(__file__).resolve().parents[2]
# the "written_by" of an evidence file: this script, and its path before benchmarks/ was split by job (the committed
# planners/sampling_evidence.json names it)
WRITERS = ("benchmarks/quality/sampling_evidence.py", "benchmarks/sampling_evidence.py")


def curves_of(path: Path) -> tuple[bool, str, list[dict], list[dict]]:
    """(tuning, label, GED-vs-S rows, per-rater-Dice-vs-samples rows) of one benchmark output."""
    r = json.loads(path.read_text())
    if "stage1_steps" in r:  # toy_proof.py run
        tuning, label = bool(r["tuning_seed"]), f"toy seed {r['seed']}"
        steps, raters = r["stage1_steps"], r.get("stage2_samples_per_rater", [])
    elif "rows" in r and "fold" in r:  # real_data.py steps
        tuning, label = r["fold"] == 0, f"{r['dataset']} {r['configuration']} fold {r['fold']}"
        steps, raters = r["rows"], r.get("samples_per_rater_rows", [])
    else:
        raise SystemExit(f"{path}: neither a toy_proof.py run output nor a real_data.py steps output; give those files")
    keep_s = ("S", "GED", "GED_se", "Dice_soft", "Dice_soft_se", "cases")
    keep_r = ("samples_per_rater", "Dice_rater_strict", "Dice_rater_strict_se", "cases")
    steps = [{k: row.get(k) for k in keep_s} for row in steps if not row.get("mirroring")]
    raters = [{k: row.get(k) for k in keep_r} for row in raters]
    return tuning, label + (" (tuning)" if tuning else ""), steps, raters


def build_evidence(files: list[Path], base: dict | None = None) -> dict:
    """The evidence of ``files``; with ``base`` (an evidence JSON this script wrote earlier) its curves are kept and
    a file's curve replaces the one of the same source, so that curves measured in different sessions add up."""
    revision = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    ev = {"rule": "per curve the smallest setting within one standard error of the curve's best; the planned "
                  "setting is the largest of the tuning curves' picks (planners/sampling_budget.py)",
          "written_by": WRITERS[0], "revision": revision,
          "sampling_steps": {"x": "S", "metric": "GED (strict, lower is better)", "curves": [], "reported": []},
          "samples_per_rater": {"x": "samples_per_rater", "metric": "Dice_rater_strict (higher is better)",
                                "curves": [], "reported": []}}
    if base is not None:
        for name in ("sampling_steps", "samples_per_rater"):
            for kind in ("curves", "reported"):
                ev[name][kind] = list(base[name][kind])
    for f in files:
        tuning, label, steps, raters = curves_of(f)
        for name, rows in (("sampling_steps", steps), ("samples_per_rater", raters)):
            if rows:
                kind = "curves" if tuning else "reported"
                ev[name][kind] = [c for c in ev[name][kind] if c["source"] != label] + [
                    {"source": label, "file": str(f), "rows": rows}]
    return ev


def render(ev: dict) -> str:
    from planners.sampling_budget import SECTIONS, planned_setting, smallest_within_one_se

    out = []
    for name, (x, metric, lower) in SECTIONS.items():
        rows = []
        for kind in ("curves", "reported"):
            for c in ev[name][kind]:
                pick = smallest_within_one_se(c["rows"], x, metric, lower)
                rows += [[c["source"], r[x], f"{r[metric]:.3f} ± {r[metric + '_se']:.3f}", r.get("cases", ""),
                          "**pick**" if r[x] == pick else ""] for r in c["rows"]]
        out += [markdown_table(["curve", x, metric, "cases", "one-SE pick"], rows), ""]
        if ev[name]["curves"]:
            out += [f"Planned {x}: **{planned_setting(ev[name], name)}** (the largest pick of the tuning curves).", ""]
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/quality/sampling_evidence.py", description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path, help="toy_rater_styles.json and steps_sweep_*.json files")
    p.add_argument("--out", type=Path, default=None, help="write the evidence JSON here (the planner's: "
                   "planners/sampling_evidence.json)")
    p.add_argument("--md", type=Path, default=None, help="also write the Markdown tables here")
    p.add_argument("--add_to", type=Path, default=None, metavar="EVIDENCE",
                   help="keep the curves of this evidence JSON (an earlier --out) and add or replace the files' curves")
    return p


def main(argv: list[str] | None = None) -> None:
    p = build_parser()
    a = p.parse_args(argv)
    missing = [str(f) for f in a.files if not f.is_file()]
    if missing:
        p.error(f"no such file: {', '.join(missing)}")
    base = None
    if a.add_to:
        if not a.add_to.is_file():
            p.error(f"--add_to {a.add_to}: no such file")
        base = json.loads(a.add_to.read_text())
        if base.get("written_by") not in WRITERS:
            p.error(f"--add_to {a.add_to}: not an evidence file this script wrote (give an earlier --out)")
    ev = build_evidence(a.files, base)
    text = render(ev)
    print(text)
    if a.out:
        from diffoseg_auto.utilities.file_ops import save_json

        save_json(ev, a.out)
    if a.md:
        a.md.write_text(text)


if __name__ == "__main__":
    main()
