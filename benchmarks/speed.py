"""Speed against the anchors: preprocessing against nnU-Net v2, a training iteration and sampling against the
paper's reference configuration, prediction against an earlier revision of this code.

    python benchmarks/speed.py preprocess --setup --cases 24 --size 64 -np 2 --repeats 2 --phases
    python benchmarks/speed.py train --iterations 3 --plans PLANS.json --configuration 2d
    python benchmarks/speed.py sampling --plans PLANS.json --precision auto fp32 --with_compile
    python benchmarks/speed.py prediction --steps 3 --threads 1 --with_fp32 --norm_ab

Each subcommand's --help says what it compares. Numbers are recorded (documentation/results.md, sections 3
and 4); nothing passes or fails.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


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


# ================================================================ train: a training iteration, our layouts against the paper's network
# Networks (Stage I unless --stage 2, K=2 classes, C=1 channel, 2D 128x128 as LIDC):
#   planned_cached   the planned nnU-Net-style 2D topology, cached_encoder layout (our default)
#   planned_concat   the same topology, concat layout (the paper's input layout on nnU-Net's U-Net)
#   reference        planners.reference_configuration: ADM-style U-Net of the official code (base 32,
#                    mult (1,1,2,3,4), attention at 16 and 8), batch 12
# The planned topology comes from --plans/--configuration when given, else from the planner's topology rules
# (planners.topology), else nnU-Net's 2D 128x128 topology written out. Per network: seconds per training iteration
# (forward, CategoricalDiffusion.training_loss, backward, AdamW step), seconds per sampling step (denoise with a
# cached encode, no grad), seconds per encode, parameters, and peak memory (CUDA: max_memory_allocated; CPU: peak RSS
# of a fresh worker process, minus its RSS after building the network). Each network runs in its own process so RSS
# peaks do not mix.

TRAIN_NETWORKS = ("planned_cached", "planned_concat", "reference")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _planned_architecture(plans_path: str | None, configuration: str):
    """(ArchitecturePlan, batch_size, source description)."""
    from diffoseg_auto.plans.plans import ArchitecturePlan, load_plans

    if plans_path:
        plans = load_plans(plans_path)
        cfg = plans.get_configuration(configuration)
        if cfg.spatial_dims != 2:
            raise SystemExit(f"{plans_path}: configuration '{configuration}' is {cfg.spatial_dims}D; this benchmark is 2D 128x128")
        return cfg.architecture, cfg.batch_size, f"plans {plans_path} [{configuration}]"
    try:
        from planners.topology import get_pool_and_conv_props

        _, strides, kernels, _, _ = get_pool_and_conv_props([1.0, 1.0], [128, 128])
        source = "planners.topology.get_pool_and_conv_props (spacing 1x1, patch 128x128)"
    except ImportError:
        strides = [[1, 1]] + [[2, 2]] * 5
        kernels = [[3, 3]] * 6
        source = "nnU-Net 2D 128x128 topology written out (planner not available)"
    n = len(strides)
    features = [min(32 * 2 ** s, 512) for s in range(n)]
    arch = ArchitecturePlan(n_stages=n, features_per_stage=features, kernel_sizes=kernels, strides=strides,
                            n_conv_per_stage=[2] * n, n_conv_per_stage_decoder=[2] * (n - 1))
    return arch, 12, source


def _plans_for(name: str, plans_path: str | None, configuration: str):
    import dataclasses

    from diffoseg_auto.plans.plans import ConfigurationPlan, Plans

    arch, batch, source = _planned_architecture(plans_path, configuration)
    layout = {"planned_cached": "cached_encoder", "planned_concat": "concat", "reference": "cached_encoder"}[name]
    arch = dataclasses.replace(arch, denoiser=layout, deep_supervision=False)
    cfg = ConfigurationPlan(data_identifier="bench", spatial_dims=2, patch_size=[128, 128], batch_size=batch,
                            spacing=[1.0, 1.0], median_image_size_in_voxels=[128, 128], normalization_schemes=["zscore"],
                            use_mask_for_norm=[False], resampling_order_data=3, resampling_order_seg=1,
                            architecture=arch)
    plans = Plans(dataset_name="Dataset000_Bench", plans_name="bench", num_classes=2,
                  raters=[f"rater{i}" for i in range(4)], num_input_channels=1, original_median_spacing=[1.0, 1.0],
                  original_median_shape=[128, 128], foreground_intensity_properties_per_channel={},
                  configurations={"2d": cfg})
    if name == "reference":  # the official code's network and batch, from planners.reference_configuration
        from planners.reference_configuration import add_reference_configuration

        add_reference_configuration(plans, "2d", "paper_reference")
        plans.configurations["2d"] = plans.configurations.pop("paper_reference")
        batch = plans.configurations["2d"].batch_size
    return plans, batch, source


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_worker(name: str, device_name: str, iterations: int, batch_size: int | None, stage: int,
               plans_path: str | None, configuration: str) -> dict:
    import torch

    from diffoseg_auto.network import build_denoiser

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    device = torch.device(device_name)
    plans, planned_batch, source = _plans_for(name, plans_path, configuration)
    b = batch_size or planned_batch
    torch.manual_seed(0)
    net = build_denoiser(plans, "2d", stage).to(device)
    try:
        from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion

        diffusion = CategoricalDiffusion(2, 250)
        loss_name = "CategoricalDiffusion.training_loss"
    except ImportError:
        diffusion, loss_name = None, "cross entropy FALLBACK (diffoseg_auto.diffusion not available)"
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    img = torch.randn(b, 1, 128, 128, device=device)
    x0 = torch.nn.functional.one_hot((torch.rand(b, 128, 128, device=device) > 0.7).long(), 2).movedim(-1, 1).float()
    rater = torch.randint(0, plans.num_raters, (b,), device=device) if stage == 2 else None
    rss_built = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step() -> None:
        if diffusion is not None:
            t = diffusion.sample_timesteps(b, device=device)
            x_t = diffusion.q_sample(x0, t)
            loss = diffusion.training_loss(x0, torch.softmax(net(img, x_t, t, rater), 1), x_t, t)
        else:
            t = torch.randint(1, 251, (b,), device=device)
            loss = torch.nn.functional.cross_entropy(net(img, x0, t, rater), x0.argmax(1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    net.train()
    train_step()  # warm-up (allocator, cudnn autotune)
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        train_step()
    _sync(device)
    train_s = (time.perf_counter() - start) / iterations
    train_peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None

    net.eval()
    t = torch.full((b,), 125, device=device, dtype=torch.long)
    with torch.no_grad():
        cache = net.encode(img)
        net.denoise(cache, x0, t, rater)
        _sync(device)
        start = time.perf_counter()
        for _ in range(iterations):
            cache = net.encode(img)
        _sync(device)
        encode_s = (time.perf_counter() - start) / iterations
        start = time.perf_counter()
        for _ in range(iterations):
            net.denoise(cache, x0, t, rater)
        _sync(device)
        step_s = (time.perf_counter() - start) / iterations
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_built)
    return {"config": name, "device": device_name, "batch": b, "stage": stage,
            "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
            "train_s_per_iter": train_s, "train_it_per_s": 1 / train_s, "sample_step_s": step_s,
            "encode_s": encode_s, "train_peak_mb": train_peak if train_peak is not None else peak,
            "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "CPU peak RSS - RSS after build",
            "loss": loss_name, "topology_source": source}



def train(a: argparse.Namespace) -> None:
    if a.iterations < 1:
        a.parser.error("--iterations must be >= 1")
    if a._worker:
        print(json.dumps(train_worker(a._worker, a._device, a.iterations, a.batch_size, a.stage, a.plans, a.configuration)))
        return
    import torch

    devices = a.devices.split(",") if a.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    configs = a.configs.split(",")
    unknown = set(configs) - set(TRAIN_NETWORKS)
    if unknown:
        a.parser.error(f"unknown --configs {sorted(unknown)}; choose from {TRAIN_NETWORKS}")
    rows = []
    for dev in devices:
        for name in configs:
            cmd = [sys.executable, os.path.abspath(__file__), "train", "--_worker", name, "--_device", dev,
                   "--iterations", str(a.iterations), "--stage", str(a.stage), "--configuration", a.configuration]
            cmd += ["--batch-size", str(a.batch_size)] if a.batch_size else []
            cmd += ["--plans", a.plans] if a.plans else []
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"benchmark worker {name} on {dev} failed:\n{res.stderr[-3000:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"  done {name} on {dev}", flush=True)
    print(f"topology: {rows[0]['topology_source']}")
    print(f"loss: {rows[0]['loss']}   memory: " + "; ".join(sorted({r['memory_kind'] for r in rows})))
    hdr = (f"{'config':16s} {'device':6s} {'batch':>5s} {'params M':>8s} {'s/iter':>8s} {'it/s':>7s} "
           f"{'step s':>8s} {'encode s':>8s} {'peak MB':>8s} {'train x':>8s} {'step x':>7s}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ref = next((q for q in rows if q["config"] == "reference" and q["device"] == r["device"]), None)
        tr = f"{ref['train_s_per_iter'] / r['train_s_per_iter']:.2f}" if ref else "-"
        st = f"{ref['sample_step_s'] / r['sample_step_s']:.2f}" if ref else "-"
        print(f"{r['config']:16s} {r['device']:6s} {r['batch']:5d} {r['params_M']:8.2f} {r['train_s_per_iter']:8.3f} "
              f"{r['train_it_per_s']:7.2f} {r['sample_step_s']:8.3f} {r['encode_s']:8.3f} {r['train_peak_mb']:8.0f} "
              f"{tr:>8s} {st:>7s}")
    print("train x / step x: speed-up relative to the reference network on the same device (>1 = faster).")
    print("sampling cost per case = steps x samples x windows x mirrorings sampling steps; the cached "
          "encoder adds windows x mirrorings encodes.")


# ================================================================ sampling: LIDC sampling against the paper's reference configuration
# The planned '2d' network and the '2d_paper_reference' network (planners/reference_configuration.py: the official
# code's ADM-style U-Net and settings) of one plans file (--plans, e.g. from `real_data.py compare --prepare lidc`;
# default: what the planner writes for the LIDC subset's fingerprint), each with its Stage I random initial weights
# (time does not depend on the weights), draw --num_samples Stage I samples of one 128x128 image at each
# configuration's planned sampling steps (25 against the paper's 250) through the same DiffOSegPredictor, no TTA, one
# after the other in this process on --threads threads; CPU seconds (process time) and wall seconds are recorded.
# The warm-up draws the timed batch for 2 steps (so oneDNN primitive creation is not timed) and is recorded apart;
# --with_compile adds ours under torch.compile (compilation timed as the warm-up).

SAMPLING_CONFIGURATIONS = ("2d", "2d_paper_reference")


def lidc_like_plans():
    """What the planner writes for the LIDC subset (71 cases, 128x128 at spacing 1, 4 raters, CT), with the paper's
    reference configuration added as '2d_paper_reference'."""
    from planners.experiment_planner import ExperimentPlanner
    from planners.reference_configuration import add_reference_configuration

    dj = {"raters": ["r0", "r1", "r2", "r3"], "labels": {"background": 0, "nodule": 1}, "channel_names": {"0": "CT"}}
    fp = {"num_cases": 71, "spacings": [[1.0, 1.0]] * 71, "shapes_after_crop": [[128, 128]] * 71,
          "intensity_range_per_channel": {"0": {"min": 0.0, "max": 1.0, "integer_valued": False}},
          "median_relative_size_after_cropping": 1.0,
          "foreground_intensity_properties_per_channel": {"0": {"mean": 0.5, "std": 0.2, "percentile_00_5": 0.0,
                                                                 "percentile_99_5": 1.0}}}
    return add_reference_configuration(ExperimentPlanner(dj, fp, "Dataset501_LIDC").plan(), "2d", SAMPLING_CONFIGURATIONS[1])


def time_configuration(plans, configuration: str, num_samples: int, steps: int | None,
                       precision: str | None = None, compile_network: bool = False) -> dict:
    """Seconds to draw ``num_samples`` Stage I samples of one image at the planned (or given) steps; the warm-up
    (with ``compile_network``: torch.compile's compilation) is timed separately."""
    import torch

    from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
    from diffoseg_auto.inference.predictor import DiffOSegPredictor
    from diffoseg_auto.network.factory import build_denoiser

    cfg = plans.get_configuration(configuration)
    torch.manual_seed(0)
    net = build_denoiser(plans, configuration, 1)
    d = cfg.diffusion
    diffusion = CategoricalDiffusion.from_plan(plans.num_classes, d)
    pred = DiffOSegPredictor(net, diffusion, cfg, "cpu", use_mirroring=False, precision=precision,
                             compile_network=compile_network)
    steps = int(steps or d.sampling_steps)
    image = np.random.RandomState(0).randn(plans.num_input_channels, *cfg.patch_size).astype(np.float32)
    t0, c0 = time.time(), time.process_time()
    pred.sample_case(image, num_samples, 2, seed=0)  # warm-up (allocator, oneDNN primitives, compilation)
    warmup = {"warmup_wall_seconds": round(time.time() - t0, 2), "warmup_cpu_seconds": round(time.process_time() - c0, 2)}
    t0, c0 = time.time(), time.process_time()
    pred.sample_case(image, num_samples, steps, seed=0)
    return {"configuration": configuration, "sampling_steps": steps, "num_samples": num_samples,
            "wall_seconds": round(time.time() - t0, 2), "cpu_seconds": round(time.process_time() - c0, 2),
            "parameters_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 2), "precision": precision or "planned",
            "compiled": compile_network, **warmup}


def sampling(a: argparse.Namespace) -> None:
    import torch

    from diffoseg_auto.plans.plans import load_plans

    torch.set_num_threads(a.threads)
    plans = load_plans(a.plans) if a.plans else lidc_like_plans()
    result = {"plans": a.plans or "planner's LIDC-like plans", "threads": a.threads, "runs": []}
    for precision in a.precision:
        ours, ref = (time_configuration(plans, c, a.num_samples, None, precision) for c in SAMPLING_CONFIGURATIONS)
        rows = [ours, ref]
        if a.with_compile:
            compiled = time_configuration(plans, SAMPLING_CONFIGURATIONS[0], a.num_samples, None, precision, True)
            compiled["speedup_cpu"] = round(ref["cpu_seconds"] / compiled["cpu_seconds"], 1)
            rows.append(compiled)
        result["runs"].append({"precision": precision or "planned", "rows": rows,
                               "speedup_cpu": round(ref["cpu_seconds"] / ours["cpu_seconds"], 1),
                               "speedup_wall": round(ref["wall_seconds"] / ours["wall_seconds"], 1)})
    text = json.dumps(result, indent=2)
    print(text)
    if a.json_out:
        Path(a.json_out).write_text(text)


# ================================================================ prediction: this checkout against an earlier revision
# Comparison: a BU-BIL-sized image (811x1024 at half resolution = 406x512 preprocessed, the '2d_halfres' CPU
# configuration of benchmarks/real_data.py: 256x256 patches, 3x3 windows, 8 stages) predicted with N Stage I samples
# and every one of the R = 10 rater prompts (Stage II), at the same steps, mirroring and threads, once with the code of
# --old_rev (exported with git archive into a temporary folder) and once with this checkout, each in its own process,
# with the same network weights (random, away from the zero inits so that time and rater matter). The new path runs
# at its default precision ('auto'), and with --with_fp32 again at fp32. Scaling (this checkout only): seconds to
# encode and per sampling step for 2D images of 256^2, 512^2, 1024^2, 3D 64^3 and 128^3 (a 3d_fullres-like
# configuration with 64^3 patches), and Stage II with R = 2, 5, 10 raters; projected seconds per image at the planned
# 25 steps = encode + 25 x step.

NUM_RATERS = 10
PREDICTION_WORKER = "_prediction_worker"  # hidden subcommand: one run inside a code root

# BU-BIL '2d' as planned (8 stages, 32..512 features), then the overrides of real_data.py's CPU configuration 2d_halfres
BUBIL_HALFRES = {
    "data_identifier": "bench", "spatial_dims": 2, "patch_size": [256, 256], "batch_size": 8, "spacing": [2.0, 2.0],
    "median_image_size_in_voxels": [406, 512], "normalization_schemes": ["zscore"], "use_mask_for_norm": [False],
    "resampling_order_data": 3, "resampling_order_seg": 1,
    "architecture": {"n_stages": 8, "features_per_stage": [32, 64, 128, 256, 512, 512, 512, 512],
                     "kernel_sizes": [[3, 3]] * 8, "strides": [[1, 1]] + [[2, 2]] * 7, "n_conv_per_stage": [2] * 8,
                     "n_conv_per_stage_decoder": [2] * 7, "num_prompts": 10, "prompt_dim": 32},
    "diffusion": {"num_timesteps": 250, "schedule_shift": 4.0, "sampling_steps": 25, "num_samples": 20,
                  "final_step": "argmax"},  # a final step that the old revision has too
    "augmentation": {"mirror_axes": [0, 1]},
    "inference": {"step_size": 0.5, "use_mirroring": True},
}
# a 3d_fullres-like configuration of a 3D toy dataset: 64^3 patches, 5 stages
TOY_3D = {
    **BUBIL_HALFRES, "spatial_dims": 3, "patch_size": [64, 64, 64], "spacing": [1.0, 1.0, 1.0],
    "median_image_size_in_voxels": [64, 64, 64],
    "architecture": {"n_stages": 5, "features_per_stage": [32, 64, 128, 256, 320], "kernel_sizes": [[3, 3, 3]] * 5,
                     "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4, "n_conv_per_stage": [2] * 5,
                     "n_conv_per_stage_decoder": [2] * 4, "num_prompts": 10, "prompt_dim": 32},
    "diffusion": {"num_timesteps": 250, "schedule_shift": 1.0, "sampling_steps": 25, "num_samples": 20},
    "augmentation": {"mirror_axes": [0, 1, 2]},
}


def plans_dict(configuration: dict, num_raters: int) -> dict:
    return {"dataset_name": "Dataset999_Bench", "plans_name": "DiffOSegPlans", "num_classes": 2,
            "raters": [f"r{i}" for i in range(num_raters)], "num_input_channels": 1,
            "original_median_spacing": configuration["spacing"],
            "original_median_shape": configuration["median_image_size_in_voxels"],
            "foreground_intensity_properties_per_channel": {}, "configurations": {"c": configuration}}


def make_weights(configuration: dict, num_raters: int, path: Path) -> None:
    """Random Stage I and Stage II weights (zero inits perturbed), saved for every worker."""
    import torch

    from diffoseg_auto.network.factory import build_denoiser
    from diffoseg_auto.plans.plans import plans_from_dict

    plans = plans_from_dict(plans_dict(configuration, num_raters))
    torch.manual_seed(0)
    weights = {}
    for stage in (1, 2):
        net = build_denoiser(plans, "c", stage)
        with torch.no_grad():
            for p in net.parameters():
                if not p.abs().any():
                    p.normal_(0, 0.02)
        weights[stage] = net.state_dict()
    torch.save(weights, path)


# ------------------------------------------------------------------ worker (runs inside the code root it is given)

def prediction_worker(a: dict) -> dict:
    import torch

    import diffoseg_auto
    from diffoseg_auto.diffusion.categorical_diffusion import CategoricalDiffusion
    from diffoseg_auto.inference.predictor import DiffOSegPredictor
    from diffoseg_auto.network.factory import build_denoiser
    from diffoseg_auto.plans.plans import plans_from_dict

    assert Path(diffoseg_auto.__file__).resolve().is_relative_to(Path(a["code_root"]).resolve()), diffoseg_auto.__file__
    torch.set_num_threads(a["threads"])
    plans = plans_from_dict(plans_dict(a["configuration"], a["num_raters"]))
    cfg = plans.get_configuration("c")
    weights = torch.load(a["weights"], weights_only=False)
    d = cfg.diffusion
    # the old revision predates from_plan and x0_given_xt: build the diffusion with the constructor both have, so
    # that both read p(x0 | x_1) as the network's p and end with its argmax (the readout costs no time). The
    # labels are no longer equal to the old ones: the sampler's posterior changed since (documentation/experiments/speed.md)
    diffusion = CategoricalDiffusion(2, d.num_timesteps, d.schedule, d.schedule_shift)
    image = np.random.default_rng(1).standard_normal((1, *a["image_shape"])).astype(np.float32)
    kwargs = {}
    if "precision" in inspect.signature(DiffOSegPredictor).parameters:
        kwargs["precision"] = a["precision"]
    out = {"code": str(Path(diffoseg_auto.__file__).parent), "precision": a["precision"] if kwargs else "fp32 (old code)"}
    labels = {}
    for stage, n in ((1, a["num_samples"]), (2, a["num_raters"])):
        if n == 0:
            continue
        net = build_denoiser(plans, "c", stage)
        net.load_state_dict(weights[stage])
        pred = DiffOSegPredictor(net, diffusion, cfg, "cpu", use_mirroring=a["tta"], step_size=0.5, **kwargs)
        raters = None if stage == 1 else list(range(n))
        t0, c0 = time.perf_counter(), time.process_time()
        labels[stage] = pred.sample_case(image, n, a["steps"], rater_id=raters, seed=3)
        out[f"stage{stage}_seconds"] = round(time.perf_counter() - t0, 2)
        # CPU time of this process: on a shared machine the robust measure (one thread: the work itself)
        out[f"stage{stage}_cpu"] = round(time.process_time() - c0, 2)
        if hasattr(pred, "full_image_denoiser"):
            out[f"stage{stage}_encode_seconds"] = timed_encode(pred, image)
    out["seconds"] = round(sum(v for k, v in out.items() if k.endswith("_seconds") and "encode" not in k), 2)
    out["cpu_seconds"] = round(sum(v for k, v in out.items() if k.endswith("_cpu")), 2)
    np.savez_compressed(a["labels_out"], **{f"stage{k}": v for k, v in labels.items()})
    return out


def timed_encode(pred, image: np.ndarray) -> float:
    """CPU seconds to encode every window (new code path only): padding, windows and one encoder pass each."""
    import torch
    from acvl_utils.cropping_and_padding.padding import pad_nd_image

    from diffoseg_auto.inference.sliding_window import compute_gaussian, sliding_window_slicers

    t0 = time.process_time()
    patch = list(pred.configuration.patch_size)
    img, _ = pad_nd_image(torch.from_numpy(image), patch, "constant", {"value": 0}, True)
    windows = sliding_window_slicers(tuple(img.shape[1:]), patch, pred.step_size)
    g = compute_gaussian(patch)
    with torch.no_grad():
        pred.full_image_denoiser(img, windows, g, torch.ones(img.shape[1:]), None if pred.num_raters is None else
                                 torch.zeros(1, dtype=torch.long), 1)
    return round(time.process_time() - t0, 2)


def run_prediction_worker(code_root: Path, args: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_NUM_THREADS": str(args["threads"])}
    args = {**args, "code_root": str(code_root)}
    cmd = [sys.executable, str(Path(__file__).resolve()), PREDICTION_WORKER, json.dumps(args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=code_root)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({code_root}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def export_revision(rev: str, dest: Path) -> str:
    """The packages of ``rev`` (git archive) in ``dest``; returns the full commit id."""
    if rev == "merge-base":
        rev = subprocess.run(["git", "-C", str(REPO), "merge-base", "HEAD", "main"], capture_output=True, text=True,
                             check=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", rev], capture_output=True, text=True, check=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "diffoseg_auto", "planners", "dataset_conversion"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return commit


# ------------------------------------------------------------------ comparisons

def label_stats(npz: Path) -> dict:
    with np.load(npz) as z:
        out = {}
        for k in z.files:
            lab = z[k].astype(bool)
            pairs = [(lab[i] == lab[j]).mean() for i in range(len(lab)) for j in range(i + 1, len(lab))]
            out[k] = {"foreground_fraction": round(float(lab.mean()), 4),
                      "mean_pairwise_agreement": round(float(np.mean(pairs)), 4) if pairs else None}
        return out


def agreement(a: Path, b: Path) -> dict:
    with np.load(a) as za, np.load(b) as zb:
        return {k: round(float((za[k] == zb[k]).mean()), 5) for k in za.files}


def compare_revisions(a: argparse.Namespace, work: Path, weights: Path) -> dict:
    old_root = work / "old_code"
    old_root.mkdir()
    commit = export_revision(a.old_rev, old_root)
    base = {"configuration": BUBIL_HALFRES, "num_raters": NUM_RATERS, "weights": str(weights), "image_shape": [406, 512],
            "num_samples": a.num_samples, "steps": a.steps, "tta": a.tta, "threads": a.threads}
    runs = {}
    variants = [("old", old_root, "fp32"), ("new_default", REPO, "auto")] + ([("new_fp32", REPO, "fp32")] if a.with_fp32 else [])
    for name, root, prec in variants:
        npz = work / f"{name}.npz"
        runs[name] = run_prediction_worker(root, {**base, "precision": prec, "labels_out": str(npz)})
        runs[name]["label_stats"] = label_stats(npz)
        print(name, json.dumps(runs[name]), flush=True)
    out = {"old_rev": a.old_rev, "old_commit": commit, "image": "406x512 (BU-BIL 811x1024 at half resolution)",
           "num_samples": a.num_samples, "num_prompts": NUM_RATERS, "steps": a.steps, "tta": a.tta, "threads": a.threads,
           "runs": runs}
    for name in runs:
        if name != "old":
            out[f"speedup_{name}"] = round(runs["old"]["seconds"] / runs[name]["seconds"], 2)
            out[f"cpu_speedup_{name}"] = round(runs["old"]["cpu_seconds"] / runs[name]["cpu_seconds"], 2)
            out[f"label_agreement_old_vs_{name}"] = agreement(work / "old.npz", work / f"{name}.npz")
    return out


def scaling(a: argparse.Namespace, work: Path) -> list[dict]:
    rows = []
    cases = [("2D", BUBIL_HALFRES, [s, s], a.num_samples, NUM_RATERS, False) for s in (256, 512, 1024)]
    cases += [("2D, mirroring TTA", BUBIL_HALFRES, [406, 512], a.num_samples, NUM_RATERS, True)]
    cases += [("2D raters", BUBIL_HALFRES, [512, 512], a.num_samples, r, False) for r in (2, 5)]
    cases += [("3D", TOY_3D, [s] * 3, a.samples_3d, a.samples_3d, False) for s in (64, 128)]
    weights = {}
    for label, cfg, shape, n, r, tta in cases:
        key = (id(cfg), r)
        if key not in weights:
            weights[key] = work / f"weights_{len(weights)}.pt"
            make_weights(cfg, r, weights[key])
        args = {"configuration": cfg, "num_raters": r, "weights": str(weights[key]), "image_shape": shape,
                "num_samples": n, "steps": a.steps, "tta": tta, "threads": a.threads, "precision": "auto",
                "labels_out": str(work / "scaling.npz")}
        res = run_prediction_worker(REPO, args)
        enc = res.get("stage1_encode_seconds", 0) + res.get("stage2_encode_seconds", 0)
        # CPU time (one thread): encode from a separate pass, the rest divided by the steps
        step = max(0.0, (res["cpu_seconds"] - enc) / a.steps)
        row = {"case": label, "image": "x".join(map(str, shape)), "samples": n, "prompts": r, "tta": tta,
               "encode_s": round(enc, 2), "step_s": round(step, 2), "projected_s_at_25_steps": round(enc + 25 * step, 1),
               "precision": res["precision"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def render_prediction(r: dict) -> str:
    lines = []
    c = r.get("comparison")
    if c:
        names = list(c["runs"])
        runs = [c["runs"][n] for n in names]
        head = [f"old ({c['old_commit'][:7]}, fp32)"] + [f"{n.replace('_', ', ')} ({x['precision']})" for n, x in zip(names[1:], runs[1:])]
        lines += ["| BU-BIL 406x512, %d samples + %d prompts, %d steps, %s, %d thread(s) | %s |"
                  % (c["num_samples"], c["num_prompts"], c["steps"], "TTA" if c["tta"] else "no TTA", c["threads"],
                     " | ".join(head)), "|---|" + "---:|" * len(names)]
        lines.append("| CPU seconds per image | " + " | ".join(str(x["cpu_seconds"]) for x in runs) + " |")
        lines.append("| speed-up vs old, CPU time | 1 | " + " | ".join(str(c[f"cpu_speedup_{n}"]) for n in names[1:]) + " |")
        lines.append("| wall seconds per image (shared machine) | " + " | ".join(str(x["seconds"]) for x in runs) + " |")
        for st in ("stage1", "stage2"):
            lines.append(f"| {st}: foreground fraction / agreement between samples | "
                         + " | ".join(f"{x['label_stats'][st]['foreground_fraction']} / "
                                      f"{x['label_stats'][st]['mean_pairwise_agreement']}" for x in runs) + " |")
        lines.append("| voxel agreement of the labels with old (same seed), stage1 / stage2 | 1 / 1 | " + " | ".join(
            "{stage1} / {stage2}".format(**c[f"label_agreement_old_vs_{n}"]) for n in names[1:]) + " |")
    if r.get("scaling"):
        lines += ["", "| case | image | samples + prompts | encode CPU s | CPU s / step | projected CPU s at 25 steps |",
                  "|---|---|---|---:|---:|---:|"]
        for s in r["scaling"]:
            lines.append(f"| {s['case']} | {s['image']} | {s['samples']} + {s['prompts']} | {s['encode_s']} | "
                         f"{s['step_s']} | {s['projected_s_at_25_steps']} |")
    return "\n".join(lines) + "\n"


def norm_ab(a: argparse.Namespace, work: Path, weights: Path) -> dict:
    """This checkout with the stock instance norm against ChannelsLastInstanceNorm2d, per precision, alternating in
    one process (same weights, image and seed): CPU seconds and the label agreement between the two."""
    from torch import nn

    from diffoseg_auto.network import blocks

    base = {"configuration": BUBIL_HALFRES, "num_raters": NUM_RATERS, "weights": str(weights), "image_shape": [406, 512],
            "num_samples": a.num_samples, "steps": a.steps, "tta": False, "threads": a.threads, "code_root": str(REPO)}
    channels_last = blocks.ChannelsLastInstanceNorm2d.forward
    out = {}
    for prec in ("fp32", "auto"):
        row = {}
        for name, forward in (("stock", nn.InstanceNorm2d.forward), ("channels_last", channels_last)):
            blocks.ChannelsLastInstanceNorm2d.forward = forward
            try:
                row[f"{name}_cpu_seconds"] = prediction_worker({**base, "precision": prec, "labels_out": str(work / f"ab_{name}.npz")})["cpu_seconds"]
            finally:
                blocks.ChannelsLastInstanceNorm2d.forward = channels_last
        row["speedup"] = round(row["stock_cpu_seconds"] / row["channels_last_cpu_seconds"], 2)
        row["label_agreement"] = agreement(work / "ab_stock.npz", work / "ab_channels_last.npz")
        out[prec] = row
        print("norm A/B", prec, json.dumps(row), flush=True)
    return out


def prediction(a: argparse.Namespace) -> None:
    result = {"command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = work / "weights.pt"
        make_weights(BUBIL_HALFRES, NUM_RATERS, weights)
        if not a.skip_compare:
            result["comparison"] = compare_revisions(a, work, weights)
        if a.scaling:
            result["scaling"] = scaling(a, work)
        if a.norm_ab:
            result["norm_ab"] = norm_ab(a, work, weights)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(render_prediction(result), end="")


def preprocess(a: argparse.Namespace) -> None:
    if a.repeats < 1 or a.cases < 1:
        a.parser.error("--repeats and --cases must be >= 1")
    run_benchmark(a)


# ================================================================ command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/speed.py", description=__doc__.split("\n\n")[0])
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
    c.add_argument("--json_out", default=None)

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
