"""speed.py sampling (and profile): LIDC sampling against the paper's reference configuration."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np



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

    from diffoseg_auto.inference.predictor import DiffOSegPredictor, PredictorSettings
    from diffoseg_auto.plans.network_arguments import denoiser_from_plans, diffusion_from_plans

    cfg = plans.get_configuration(configuration)
    torch.manual_seed(0)
    net = denoiser_from_plans(plans, configuration, 1)
    d = cfg.diffusion
    diffusion = diffusion_from_plans(plans, configuration)
    pred = DiffOSegPredictor(net, diffusion, cfg, "cpu", PredictorSettings(use_mirroring=False, precision=precision,
                                                                           compile_network=compile_network))
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


def median_row(rows: list[dict]) -> dict:
    """The run with the median CPU seconds of repeated timings (odd counts: an actual run), every run's seconds kept."""
    ordered = sorted(rows, key=lambda r: r["cpu_seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "repeats": len(rows),
            "cpu_seconds_runs": [r["cpu_seconds"] for r in rows], "wall_seconds_runs": [r["wall_seconds"] for r in rows]}


def speedup_markdown(results: list[dict]) -> str:
    """The speed-up table of results.md from one or more ``sampling --json_out`` outputs (e.g. one per precision,
    run side by side): per precision, ours and the reference's median CPU seconds and every run's."""
    from benchmarks.lib.bench_lib import markdown_table

    rows = []
    for result in results:
        for run in result["runs"]:
            ours, ref = run["rows"][0], run["rows"][1]
            rows.append([f"`{run['precision']}`", f"{ours['cpu_seconds']} (S = {ours['sampling_steps']})",
                         f"{ref['cpu_seconds']} ({ref['sampling_steps']} steps)", f"**{run['speedup_cpu']}x**", str(ours["cpu_seconds_runs"]),
                         str(ref["cpu_seconds_runs"])])
            for extra in run["rows"][2:]:  # --with_compile
                rows.append([f"`{run['precision']}`, torch.compile", f"{extra['cpu_seconds']} (S = {extra['sampling_steps']})",
                             f"{ref['cpu_seconds']} ({ref['sampling_steps']} steps)", f"**{extra['speedup_cpu']}x**",
                             "(one run)", ""])
    return markdown_table(["precision", "ours: CPU s", "the paper's configuration: CPU s",
                           "speed-up, CPU time", "ours, each run", "reference, each run"], rows) + "\n"


def sampling(a: argparse.Namespace) -> None:
    if a.render:
        text = speedup_markdown([json.loads(Path(f).read_text()) for f in a.render])
        print(text)
        if a.md:
            Path(a.md).write_text(text)
        return
    import torch

    from diffoseg_auto.plans.plans import load_plans

    if a.repeats < 1:
        a.parser.error("--repeats must be >= 1")
    torch.set_num_threads(a.threads)
    plans = load_plans(a.plans) if a.plans else lidc_like_plans()
    steps = {SAMPLING_CONFIGURATIONS[0]: a.steps}  # None: the plans' S; the reference keeps the paper's 250
    result = {"plans": a.plans or "planner's LIDC-like plans", "threads": a.threads, "repeats": a.repeats, "runs": []}
    for precision in a.precision:
        # ours and the reference alternate, so that drift of a shared machine hits both alike
        timed = {c: [] for c in SAMPLING_CONFIGURATIONS}
        for _ in range(a.repeats):
            for c in SAMPLING_CONFIGURATIONS:
                timed[c].append(time_configuration(plans, c, a.num_samples, steps.get(c), precision))
        ours, ref = (median_row(timed[c]) for c in SAMPLING_CONFIGURATIONS)
        rows = [ours, ref]
        if a.with_compile:
            compiled = time_configuration(plans, SAMPLING_CONFIGURATIONS[0], a.num_samples, a.steps, precision, True)
            compiled["speedup_cpu"] = round(ref["cpu_seconds"] / compiled["cpu_seconds"], 1)
            rows.append(compiled)
        result["runs"].append({"precision": precision or "planned", "rows": rows,
                               "speedup_cpu": round(ref["cpu_seconds"] / ours["cpu_seconds"], 1),
                               "speedup_wall": round(ref["wall_seconds"] / ours["wall_seconds"], 1)})
        print(f"{precision or 'planned'}: ours {ours['cpu_seconds']} s, reference {ref['cpu_seconds']} s, "
              f"speed-up {result['runs'][-1]['speedup_cpu']}x (CPU time, median of {a.repeats})", flush=True)
    text = json.dumps(result, indent=2)
    print(text)
    if a.json_out:
        Path(a.json_out).write_text(text)
    if a.md:
        Path(a.md).write_text(speedup_markdown([result]))


# ================================================================ profile: one sampling step, bf16 against fp32
# Where the time of the cached-encoder decoder goes, per precision: torch.profiler's self CPU time per operator over
# --steps sampling steps of --num_samples samples of one image (the one encode is included: under 5% of the time),
# and, from a dispatch-level census of one further step, the dtypes each operator actually ran in (below autocast,
# so an operator listed with float32 inputs under bf16 is one that autocast keeps in fp32) and the memory formats it
# saw: the layout conversions are the copies (aten::_to_copy, copy_, clone, contiguous) between channels-last and
# contiguous tensors.

CONVERSION_OPS = ("aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous", "aten::to")


def dispatch_census(run) -> dict[str, dict]:
    """{operator: {"calls", "input_dtypes", "output_dtypes", "formats"}} of every aten call ``run()`` makes."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    census: dict[str, dict] = {}

    def fmt(t: torch.Tensor) -> str:
        if t.dim() >= 4 and t.is_contiguous(memory_format=torch.channels_last if t.dim() == 4 else torch.channels_last_3d) \
                and not t.is_contiguous():
            return "channels_last"
        return "contiguous" if t.is_contiguous() else "strided"

    class Census(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = "aten::" + func.overloadpacket.__name__
            entry = census.setdefault(name, {"calls": 0, "input_dtypes": set(), "output_dtypes": set(), "formats": set()})
            entry["calls"] += 1
            ins = [x for x in tree_flatten((args, kwargs or {}))[0] if isinstance(x, torch.Tensor)]
            outs = [x for x in tree_flatten(out)[0] if isinstance(x, torch.Tensor)]
            entry["input_dtypes"].update(str(x.dtype).replace("torch.", "") for x in ins if x.is_floating_point())
            entry["output_dtypes"].update(str(x.dtype).replace("torch.", "") for x in outs if x.is_floating_point())
            entry["formats"].update(f"{fmt(x)}>{fmt(y)}" for x in ins[:1] for y in outs[:1] if x.dim() >= 4)
            return out

    with Census():
        run()
    return {k: {**v, **{f: sorted(v[f]) for f in ("input_dtypes", "output_dtypes", "formats")}} for k, v in census.items()}


def profile_precision(plans, configuration: str, num_samples: int, steps: int, precision: str, top: int) -> dict:
    import torch

    from diffoseg_auto.inference.predictor import DiffOSegPredictor, PredictorSettings
    from diffoseg_auto.plans.network_arguments import denoiser_from_plans, diffusion_from_plans

    cfg = plans.get_configuration(configuration)
    torch.manual_seed(0)
    net = denoiser_from_plans(plans, configuration, 1)
    pred = DiffOSegPredictor(net, diffusion_from_plans(plans, configuration), cfg, "cpu",
                             PredictorSettings(use_mirroring=False, precision=precision))
    image = np.random.RandomState(0).randn(plans.num_input_channels, *cfg.patch_size).astype(np.float32)
    pred.sample_case(image, num_samples, 2, seed=0)  # warm-up: oneDNN primitives are created here, not profiled
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        pred.sample_case(image, num_samples, steps, seed=0)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    census = dispatch_census(lambda: pred.sample_case(image, num_samples, 1, seed=0))
    rows = []
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        # the census sees the dispatched op (aten::convolution), the profiler the kernel it chose (mkldnn_convolution)
        c = census.get(e.key) or (census.get("aten::convolution", {}) if "conv" in e.key else {})
        rows.append({"operator": e.key, "self_cpu_ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 2),
                     "share": round(e.self_cpu_time_total / total, 3), "calls_per_step": round(e.count / steps, 1),
                     "input_dtypes": c.get("input_dtypes", []), "formats": c.get("formats", [])})
    conversions = sum(e.self_cpu_time_total for e in events if e.key in CONVERSION_OPS)
    fp32_under_autocast = sorted(k for k, v in census.items() if "float32" in v["input_dtypes"]
                                 and k not in CONVERSION_OPS) if precision != "fp32" else []
    return {"precision": precision, "autocast_dtype": str(pred.amp_dtype),
            "self_cpu_ms_per_step": round(total / 1e3 / steps, 2),
            "conversion_share": round(conversions / total, 3), "top": rows,
            "operators_with_fp32_inputs": fp32_under_autocast}


def profile_markdown(result: dict, top: int = 10) -> str:
    """The profile section of results.md: per precision the operator time per step, its share in copies and
    conversions, the ``top`` operators, and the operators that kept float32 inputs under autocast."""
    from benchmarks.lib.bench_lib import markdown_table

    out = []
    for r in result["runs"]:
        out += [f"`{r['precision']}` (autocast {r['autocast_dtype']}): "
                f"{r['self_cpu_ms_per_step']} ms of operator time per step, {100 * r['conversion_share']:.1f}% of it "
                "in copies and conversions.", ""]
        out.append(markdown_table(["operator", "ms / step", "share", "calls / step", "input dtypes",
                                   "memory formats (in > out)"],
                                  [[f"`{row['operator']}`", row["self_cpu_ms_per_step"], f"{100 * row['share']:.1f}%",
                                    row["calls_per_step"], ", ".join(row["input_dtypes"]), "; ".join(row["formats"])]
                                   for row in r["top"][:top]], left=1))
        out.append("")
        if r["operators_with_fp32_inputs"]:
            out += ["Operators that ran with float32 inputs under bf16 autocast: "
                    + ", ".join(f"`{o}`" for o in r["operators_with_fp32_inputs"]) + ".", ""]
    return "\n".join(out)


def profile(a: argparse.Namespace) -> None:
    import torch

    from diffoseg_auto.plans.plans import load_plans

    torch.set_num_threads(a.threads)
    plans = load_plans(a.plans) if a.plans else lidc_like_plans()
    result = {"plans": a.plans or "planner's LIDC-like plans", "configuration": a.configuration,
              "threads": a.threads, "num_samples": a.num_samples, "steps": a.steps,
              "torch": torch.__version__, "mkldnn_bf16": bool(getattr(torch.backends.mkldnn, "is_available", bool)()),
              "runs": [profile_precision(plans, a.configuration, a.num_samples, a.steps, p, a.top) for p in a.precision]}
    for r in result["runs"]:
        print(f"== {r['precision']}: {r['self_cpu_ms_per_step']} ms of operator time per step, "
              f"{100 * r['conversion_share']:.1f}% in copies/conversions")
        for row in r["top"]:
            print(f"  {row['operator']:<36} {row['self_cpu_ms_per_step']:9.2f} ms {100 * row['share']:5.1f}%  "
                  f"x{row['calls_per_step']:<6} {','.join(row['input_dtypes']):<18} {';'.join(row['formats'])}")
        if r["operators_with_fp32_inputs"]:
            print("  operators that ran with float32 inputs: " + ", ".join(r["operators_with_fp32_inputs"]))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(result, indent=2))
    if a.md:
        Path(a.md).write_text(profile_markdown(result))
