"""The candidates of a time-budget plan: configurations derived from a planned one (coarser spacing, narrower
stages), the batch they train with, and their relative compute (the cost model that estimates a candidate before
it is measured). documentation/planning.md, "Time budget"."""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from planners.memory_model import stage_voxels
from planners.topology import get_pool_and_conv_props

SPACING_FACTORS = (1, 2, 4, 8)
FEATURE_DIVISORS = (1, 2, 4)
MIN_FEATURES = 8
MIN_IMAGE_EDGE = 16          # a coarser spacing is a candidate only while the median image keeps this many voxels per axis
MIN_OBJECT_VOXELS = 16       # ... and while the median annotated object keeps this many voxels (fingerprint)
# The largest batch of the budget runs whose held-out GED chose the rule (LIDC 14, BU-BIL 10; planning.md). On a CPU
# an iteration costs in proportion to its batch, so a larger batch buys no more samples per hour, only fewer updates;
# the planned batch is sized to fill a GPU's memory (and grows with the dataset: 5% of its annotations).
CPU_MAX_BATCH = 14


@dataclass(frozen=True)
class Candidate:
    spacing_factor: int
    feature_divisor: int

    @property
    def key(self) -> str:
        return f"spacing_x{self.spacing_factor}_widths_div{self.feature_divisor}"


def _in_plane(cfg: dict) -> list[int]:
    """Axes of cfg['spacing'] that the network sees (a 2d configuration of 3D data drops its slice axis)."""
    n = len(cfg["spacing"])
    axis = cfg.get("slice_axis")
    return [i for i in range(n) if not (cfg["spatial_dims"] == 2 and n == 3 and i == axis)]


def candidate_configuration(plans: dict, base: str, cand: Candidate) -> dict | None:
    """The fields of ``base`` that ``cand`` changes, as a configuration inheriting from it; None if not viable."""
    from planners.experiment_planner import schedule_shift_for_patch

    cfg = resolved_configuration(plans, base)
    arch = cfg["architecture"]
    axes = _in_plane(cfg)
    f = cand.spacing_factor
    out: dict = {"inherits_from": base}
    n_stages = arch["n_stages"]
    if f != 1:
        net_spacing = [cfg["spacing"][i] * f for i in axes]
        median = [int(math.ceil(v / f)) for v in cfg["median_image_size_in_voxels"]]
        if min(median) < MIN_IMAGE_EDGE:
            return None
        patch = [min(p, m) for p, m in zip(cfg["patch_size"], median)]
        _, strides, kernels, patch, _ = get_pool_and_conv_props(net_spacing, patch)
        n_stages = len(strides)
        spacing = list(cfg["spacing"])
        for i in axes:
            spacing[i] = spacing[i] * f
        out.update({"data_identifier": f"{plans['plans_name']}_{base}_spacing_x{f}", "spacing": spacing,
                    "median_image_size_in_voxels": median, "patch_size": [int(p) for p in patch]})
        out["diffusion"] = {"schedule_shift": schedule_shift_for_patch(patch)}
    if f != 1 or cand.feature_divisor != 1:
        feats = list(arch["features_per_stage"])
        while len(feats) < n_stages:
            feats.append(min(2 * feats[-1], max(arch["features_per_stage"])))
        # lists are replaced, not merged, by inheritance: every per-stage list is written
        new_arch = {"n_stages": n_stages,
                    "features_per_stage": [max(MIN_FEATURES, x // cand.feature_divisor) for x in feats[:n_stages]],
                    "n_conv_per_stage": [arch["n_conv_per_stage"][0]] * n_stages,
                    "n_conv_per_stage_decoder": [arch["n_conv_per_stage_decoder"][0]] * (n_stages - 1)}
        if f != 1:
            new_arch.update({"strides": strides, "kernel_sizes": kernels})
        out["architecture"] = new_arch
    return out


def resolved_configuration(plans: dict, name: str) -> dict:
    """A configuration with its inheritance applied (as plans.load_plans resolves it), as a plain dict."""
    from diffoseg_auto.plans.plans import plans_from_dict

    return dataclasses.asdict(plans_from_dict(copy.deepcopy(plans)).get_configuration(name))


def viable_candidates(plans: dict, base: str, median_object_voxels: float | None = None) -> dict[Candidate, dict]:
    """Every candidate of the grid that keeps the image and (with the fingerprint's size) the objects resolvable."""
    dim = resolved_configuration(plans, base)["spatial_dims"]
    out = {}
    for f in SPACING_FACTORS:
        if f > 1 and median_object_voxels is not None and median_object_voxels / f ** dim < MIN_OBJECT_VOXELS:
            continue
        for d in FEATURE_DIVISORS:
            c = Candidate(f, d)
            cfg = candidate_configuration(plans, base, c)
            if cfg is not None:
                out[c] = cfg
    return out


def budget_batch_size(planned: int, device: str) -> int:
    """The batch a budget candidate trains with: the planned one on a GPU (an iteration costs about the same up to
    the memory-sized batch), at most CPU_MAX_BATCH on a CPU."""
    return int(planned) if str(device).startswith("cuda") else int(min(planned, CPU_MAX_BATCH))


@dataclass(frozen=True)
class CandidateWork:
    """Relative sizes of one candidate (resolved configuration): what its measured pieces scale with."""

    macs: float           # multiply-accumulates of the convolutions of one training batch (image and x_t paths)
    voxels: float         # patch voxels x batch: what augmentation scales with
    parameters: float     # convolution weights: what a checkpoint scales with
    batch: int


def candidate_work(cfg: dict) -> CandidateWork:
    """The convolutions of the cached-encoder denoiser per stage (encoder: image path and the x_t path at
    1 / x_t_width_divisor of the widths; decoder: its first convolution reads the skip concatenation), weighted by
    the stage's voxels. A model for ratios between candidates of one plan, not for absolute seconds."""
    arch = cfg["architecture"]
    feats = arch["features_per_stage"]
    vox = stage_voxels(cfg["patch_size"], arch["strides"])
    div = max(1, int(arch.get("x_t_width_divisor", 4)))
    macs = params = 0.0
    for s, f in enumerate(feats):
        k = float(np.prod(arch["kernel_sizes"][s]))
        enc = arch["n_conv_per_stage"][s] * k * (f * f + (f // div) ** 2)
        dec = (k * (2 * f * f + (arch["n_conv_per_stage_decoder"][s] - 1) * f * f)
               if s < len(feats) - 1 else 0.0)
        params += enc + dec
        macs += (enc + dec) * vox[s]
    batch = int(cfg["batch_size"])
    return CandidateWork(macs * batch, float(np.prod(cfg["patch_size"])) * batch, params, batch)
