"""speed.py preprocess: fingerprint + planning + preprocessing against nnU-Net v2 on the same toy dataset."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]


# ================================================================ preprocess: ours against nnU-Net v2
# Both tools get the same cases of a generated 3D toy dataset (dataset_conversion/generate_toy_dataset.py): ours all
# raters (multi-rater raw format), nnU-Net ONE rater's labels in nnU-Net's raw format (imagesTr/<case>_0000.nii.gz,
# labelsTr/<case>.nii.gz, dataset.json). Each tool runs as a fresh subprocess (imports included), with the same number
# of worker processes (ours -np N; nnU-Net -np N -npfp N), the same configurations (-c), its preprocessed folder
# deleted before every run, and runs interleaved (ours, nnU-Net, ours, nnU-Net, ...) so drift hits both alike. The
# first round reads the raw files cold from the page cache's point of view; later rounds are warm. nnU-Net lives in
# its own virtual environment (default benchmarks/.venv_nnunet, gitignored) that reuses this project's packages
# (torch, numpy, SimpleITK, ...) through a .pth file instead of downloading its own torch; --setup creates it.
# Without it the nnU-Net half is skipped with a message.

DEFAULT_VENV = REPO / "benchmarks" / ".venv_nnunet"
DATASET_ID = 990
DATASET_NAME = f"Dataset{DATASET_ID:03d}_Toy3DSpeed"
NNUNET_CMD = "nnUNetv2_plan_and_preprocess"
# run inside the nnU-Net venv: requirements (transitively, markers evaluated) of nnunetv2 with no installed distribution
_MISSING_REQUIREMENTS = """
import importlib.metadata as m, json
from packaging.requirements import Requirement
todo, seen, missing = ["nnunetv2"], set(), set()
while todo:
    dist = todo.pop()
    if dist.lower() in seen:
        continue
    seen.add(dist.lower())
    for q in m.requires(dist) or []:
        r = Requirement(q)
        if r.marker is not None and not r.marker.evaluate({"extra": ""}):
            continue
        try:
            m.distribution(r.name)
            todo.append(r.name)
        except m.PackageNotFoundError:
            missing.add(r.name)
print(json.dumps(sorted(missing)))
"""


# ---------------------------------------------------------------- nnU-Net environment

def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def nnunet_available(venv: Path) -> bool:
    """True when ``venv`` has a working nnUNetv2_plan_and_preprocess (its -h runs)."""
    exe = venv / "bin" / NNUNET_CMD
    if not exe.is_file():
        return False
    r = subprocess.run([str(exe), "-h"], capture_output=True, text=True)
    return r.returncode == 0


def _pip(venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(_venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)


def _missing_requirements(venv: Path) -> list[str]:
    r = subprocess.run([str(_venv_python(venv)), "-c", _MISSING_REQUIREMENTS], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{venv}: could not list nnunetv2's requirements: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout)


def setup_nnunet_venv(venv: Path = DEFAULT_VENV) -> tuple[bool, str]:
    """Create ``venv`` with nnunetv2 from PyPI, reusing this interpreter's site-packages. (ok, message)."""
    if nnunet_available(venv):
        return True, f"{venv}: nnU-Net already installed"
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"could not create the venv {venv}: {r.stderr.strip()[-500:]}"
    # a .pth line adds our site-packages to the venv's sys.path: torch & co. are reused, not downloaded (5 GB)
    venv_site = subprocess.run([str(_venv_python(venv)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True).stdout.strip()
    Path(venv_site, "_diffoseg_main_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = _pip(venv, "--no-deps", "nnunetv2")
    if r.returncode != 0:
        return False, f"pip install --no-deps nnunetv2 failed in {venv}: {r.stderr.strip()[-500:]}"
    # install only what is missing, each with --no-deps, until nothing is: pip never resolves torch itself
    installed: list[str] = []
    for _ in range(10):
        missing = _missing_requirements(venv)
        if not missing:
            break
        if "torch" in missing:
            return False, f"{venv}: torch is not visible through the .pth file; refusing to download it (5 GB CUDA build)"
        r = _pip(venv, "--no-deps", *missing)
        if r.returncode != 0:
            return False, f"pip install --no-deps {' '.join(missing)} failed in {venv}: {r.stderr.strip()[-500:]}"
        installed += missing
    if not nnunet_available(venv):
        return False, f"{venv}/bin/{NNUNET_CMD} -h fails after installation; see `{venv}/bin/{NNUNET_CMD} -h`"
    return True, f"{venv}: installed nnunetv2 (+ {', '.join(installed) or 'no missing dependencies'})"


# ---------------------------------------------------------------- data

def make_datasets(work: Path, num_cases: int, size: int, num_raters: int, rater: int, seed: int) -> list[str]:
    """Our raw dataset under work/diffoseg_raw and the same cases, one rater, under work/nnUNet_raw. Returns cases."""
    from dataset_conversion.generate_toy_dataset import generate_toy_dataset
    from diffoseg_auto.dataset.raw_dataset import RawDataset

    ours = generate_toy_dataset(work / "diffoseg_raw" / DATASET_NAME, dim=3, num_cases=num_cases,
                                num_raters=num_raters, image_size=size, seed=seed)
    raw = RawDataset(ours)
    if not 0 <= rater < raw.num_raters:
        raise SystemExit(f"--rater {rater}: the toy dataset has raters 0..{raw.num_raters - 1}")
    missing = [c for c in raw.cases if raw.label_file(rater, c) is None]
    if missing:  # nnU-Net needs a label per case; both tools must see the same cases
        raise SystemExit(f"--rater {rater} ({raw.raters[rater]}) did not annotate {len(missing)} case(s); "
                         "choose a rater who annotated every case (rater 0 does in the toy dataset)")
    nn = work / "nnUNet_raw" / DATASET_NAME
    (nn / "imagesTr").mkdir(parents=True)
    (nn / "labelsTr").mkdir(parents=True)
    for case, files in raw.image_files_by_case("Tr").items():
        for f in files:
            shutil.copyfile(f, nn / "imagesTr" / f.name)
        shutil.copyfile(raw.label_file(rater, case), nn / "labelsTr" / f"{case}{raw.file_ending}")
    dj = {"channel_names": raw.dataset_json["channel_names"], "labels": raw.dataset_json["labels"],
          "numTraining": len(raw.cases), "file_ending": raw.file_ending, "name": DATASET_NAME}
    (nn / "dataset.json").write_text(json.dumps(dj, indent=2))
    return raw.cases


# ---------------------------------------------------------------- runs

@dataclass
class Run:
    tool: str
    round: int | str   # round number, or the phase name for --phases runs
    seconds: float


def _env(work: Path) -> dict:
    env = dict(os.environ)
    for prefix in ("diffoseg", "nnUNet"):
        for part in ("raw", "preprocessed", "results"):
            env[f"{prefix}_{part}"] = str(work / f"{prefix}_{part}")
    return env


def our_command(configs: list[str], num_processes: int) -> list[str]:
    return [sys.executable, "-m", "planners.plan_and_preprocess_entrypoints", "-d", str(DATASET_ID),
            "-np", str(num_processes), "-c", *configs, "--clean"]


def nnunet_command(venv: Path, configs: list[str], num_processes: int) -> list[str]:
    return [str(venv / "bin" / NNUNET_CMD), "-d", str(DATASET_ID), "-c", *configs,
            "-np", *[str(num_processes)] * len(configs), "-npfp", str(num_processes), "--clean"]


def phase_commands(tool: str, venv: Path, configs: list[str], num_processes: int) -> dict[str, list[str]]:
    """fingerprint / planning / preprocessing as three separate commands (each pays its own start-up)."""
    n, d = str(num_processes), str(DATASET_ID)
    if tool == "nnunet":
        b = venv / "bin"
        return {"fingerprint": [str(b / "nnUNetv2_extract_fingerprint"), "-d", d, "-np", n, "--clean"],
                "planning": [str(b / "nnUNetv2_plan_experiment"), "-d", d],
                "preprocessing": [str(b / "nnUNetv2_preprocess"), "-d", d, "-c", *configs, "-np", *[n] * len(configs)]}

    def entry(fn: str, *args: str) -> list[str]:
        return [sys.executable, "-c", f"import sys; from planners.plan_and_preprocess_entrypoints import {fn}; {fn}(sys.argv[1:])",
                *args]

    return {"fingerprint": entry("extract_fingerprint", "-d", d, "-np", n, "--clean"),
            "planning": entry("plan_experiment", "-d", d),
            "preprocessing": entry("preprocess", "-d", d, "-c", *configs, "-np", n, "--clean")}


def timed_run(tool: str, cmd: list[str], work: Path, round_: int | str, clean: bool = True) -> Run:
    """Delete the tool's preprocessed output (``clean``), run ``cmd``, return its wall time; log in work/logs."""
    prefix = "diffoseg" if tool == "ours" else "nnUNet"
    if clean:
        shutil.rmtree(work / f"{prefix}_preprocessed", ignore_errors=True)
        (work / f"{prefix}_preprocessed").mkdir(parents=True)
    log = work / "logs" / f"{tool}_{'round' if isinstance(round_, int) else 'phase_'}{round_}.log"
    log.parent.mkdir(exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=REPO, env=_env(work), stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{tool} round {round_} failed (exit {r.returncode}): {' '.join(cmd)}\n--- {log} (tail) ---\n{tail}")
    return Run(tool, round_, seconds)


def time_phases(tools: list[str], venv: Path, work: Path, configs: list[str], num_processes: int) -> dict:
    """{tool: {phase: seconds}}: one run of the three steps, preprocessed folder emptied before the first."""
    out: dict = {}
    for tool in tools:
        out[tool] = {}
        for i, (phase, cmd) in enumerate(phase_commands(tool, venv, configs, num_processes).items()):
            out[tool][phase] = timed_run(tool, cmd, work, phase, clean=i == 0).seconds
            print(f"phase {phase}: {tool} {out[tool][phase]:.2f} s", flush=True)
    return out


def our_plan_summary(work: Path, config: str) -> dict:
    from diffoseg_auto.plans.plans import load_plans

    c = load_plans(work / "diffoseg_preprocessed" / DATASET_NAME / "DiffOSegPlans.json").get_configuration(config)
    return {"patch_size": list(c.patch_size), "batch_size": int(c.batch_size), "n_stages": int(c.architecture.n_stages),
            "spacing": [round(float(s), 4) for s in c.spacing]}


def nnunet_plan_summary(work: Path, config: str) -> dict:
    plans = json.loads((work / "nnUNet_preprocessed" / DATASET_NAME / "nnUNetPlans.json").read_text())
    c = plans["configurations"][config]
    arch = c.get("architecture", {}).get("arch_kwargs", {})
    n_stages = arch.get("n_stages", len(c.get("pool_op_kernel_sizes", [])) or None)  # pre-2.4 plans: pooling list
    return {"patch_size": list(c["patch_size"]), "batch_size": int(c["batch_size"]), "n_stages": n_stages,
            "spacing": [round(float(s), 4) for s in c["spacing"]]}


def _fmt_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows)


def run_benchmark(args: argparse.Namespace) -> dict:
    venv = Path(args.nnunet_venv)
    nnunet_ok, why = True, ""
    if args.setup:
        try:
            nnunet_ok, why = setup_nnunet_venv(venv)
        except (OSError, RuntimeError, ValueError) as e:  # a failed install skips the nnU-Net half, it never aborts ours
            nnunet_ok, why = False, f"installing nnU-Net into {venv} failed: {e}"
        print(why)
    elif not nnunet_available(venv):
        nnunet_ok, why = False, f"{venv}/bin/{NNUNET_CMD} not found or broken (run with --setup to install it)"
    if not nnunet_ok:
        print(f"nnU-Net half SKIPPED: {why}")
    work = Path(tempfile.mkdtemp(prefix="preprocess_speed_", dir=args.work_dir))
    try:
        t0 = time.perf_counter()
        cases = make_datasets(work, args.cases, args.size, args.raters, args.rater, args.seed)
        print(f"toy dataset: {len(cases)} cases of {args.size}^3, {args.raters} raters (nnU-Net gets rater {args.rater}); "
              f"generated in {time.perf_counter() - t0:.1f} s under {work}")
        ours_cmd = our_command(args.configurations, args.num_processes)
        nn_cmd = nnunet_command(venv, args.configurations, args.num_processes)
        print("ours:    " + " ".join(ours_cmd[1:]).replace("-m planners.plan_and_preprocess_entrypoints", "diffoseg_plan_and_preprocess"))
        if nnunet_ok:
            print("nnU-Net: " + " ".join([NNUNET_CMD, *nn_cmd[1:]]))
        runs: list[Run] = []
        for rnd in range(1, args.repeats + 1):
            runs.append(timed_run("ours", ours_cmd, work, rnd))
            print(f"round {rnd}: ours {runs[-1].seconds:.2f} s", flush=True)
            if nnunet_ok:
                runs.append(timed_run("nnunet", nn_cmd, work, rnd))
                print(f"round {rnd}: nnU-Net {runs[-1].seconds:.2f} s", flush=True)
        tools = ["ours", "nnunet"] if nnunet_ok else ["ours"]
        phases = time_phases(tools, venv, work, args.configurations, args.num_processes) if args.phases else {}
        result: dict = {"phases": phases, "cases": len(cases), "size": args.size, "raters": args.raters, "num_processes": args.num_processes,
                        "configurations": args.configurations, "cpu_count": os.cpu_count(),
                        "runs": [r.__dict__ for r in runs], "nnunet_skipped": None if nnunet_ok else why}
        ours_t = [r.seconds for r in runs if r.tool == "ours"]
        rows = [["", "ours (diffoseg)", "nnU-Net v2"]]
        for rnd in range(args.repeats):
            nn_t = [r.seconds for r in runs if r.tool == "nnunet"]
            rows.append([f"run {rnd + 1} [s]", f"{ours_t[rnd]:.2f}", f"{nn_t[rnd]:.2f}" if nnunet_ok else "skipped"])
        plans_cfg = "3d_fullres" if "3d_fullres" in args.configurations else args.configurations[0]
        ours_p = our_plan_summary(work, plans_cfg)
        result["plans"] = {"configuration": plans_cfg, "ours": ours_p}
        if nnunet_ok:
            nn_t = [r.seconds for r in runs if r.tool == "nnunet"]
            ratios = [o / n for o, n in zip(ours_t, nn_t)]
            result["ratio_per_round"] = ratios
            result["ratio_best"] = min(ours_t) / min(nn_t)
            rows.append(["ratio ours/nnU-Net", " ".join(f"{r:.2f}" for r in ratios) + f" (best-of: {result['ratio_best']:.2f})", ""])
            nn_p = nnunet_plan_summary(work, plans_cfg)
            result["plans"]["nnunet"] = nn_p
        for key in ("patch_size", "batch_size", "n_stages", "spacing"):
            rows.append([f"{plans_cfg} {key}", str(ours_p[key]), str(result["plans"]["nnunet"][key]) if nnunet_ok else "skipped"])
        for phase in ("fingerprint", "planning", "preprocessing") if phases else ():
            rows.append([f"phase {phase} [s]", f"{phases['ours'][phase]:.2f}",
                         f"{phases['nnunet'][phase]:.2f}" if nnunet_ok else "skipped"])
        print(_fmt_table(rows))
        if nnunet_ok:
            goal = "reached" if result["ratio_best"] <= 1.0 else "NOT reached"
            print(f"goal ratio <= 1.0: {goal}")
        if args.json_out:
            from diffoseg_auto.utilities.file_ops import save_json

            save_json(result, args.json_out)
        return result
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)



def preprocess(a: argparse.Namespace) -> None:
    if a.repeats < 1 or a.cases < 1:
        a.parser.error("--repeats and --cases must be >= 1")
    run_benchmark(a)
