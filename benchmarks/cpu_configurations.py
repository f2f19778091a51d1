"""CPU-sized configurations that the real-data benchmarks add to a dataset's plans, as a user would edit the JSON.

Each inherits the planned '2d' and changes only what makes an iteration cheap on a CPU: a coarser spacing
(``factor`` times the planned one: fewer voxels), a smaller patch, fewer stages, or fewer features per stage
(``feature_divisor``: the planned widths divided, at least 8). A configuration at the planned spacing and patch
keeps '2d''s data_identifier, so it reuses '2d''s preprocessed data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuConfiguration:
    factor: int = 1  # spacing multiplier
    edge: int | None = None  # square patch edge; None: the planned patch
    stages: int | None = None  # the planned topology's first `stages` stages (at most all); None: all
    feature_divisor: int = 1


# BU-BIL: at 1/4 (203x256) one 256x256 window covers the whole image; at 1/8 (101x128) one 128x128 window does,
# with 6 stages so that the bottleneck stays 4x4 (a cell is then about 25 px across).
# LIDC: the planned 128x128 crops and topology at half the widths (about 1/4 of the convolution work).
CPU_CONFIGURATIONS = {
    "2d_halfres": CpuConfiguration(factor=2, edge=256),
    "2d_quarterres": CpuConfiguration(factor=4, edge=256),
    "2d_eighthres": CpuConfiguration(factor=8, edge=128, stages=6),
    "2d_lite": CpuConfiguration(feature_divisor=2),
}


def add_cpu_configuration(plans_file: Path, name: str, batch_size: int | None = None) -> dict:
    """Add CPU_CONFIGURATIONS[name] to the plans JSON (inheriting '2d'); ``batch_size`` None keeps the planned one."""
    from diffoseg_auto.utilities.file_ops import load_json, save_json

    spec = CPU_CONFIGURATIONS[name]
    plans = load_json(plans_file)
    base = plans["configurations"]["2d"]
    config: dict = {"inherits_from": "2d"}
    purpose = []
    if spec.factor != 1 or spec.edge is not None:
        edge = spec.edge or base["patch_size"][0]
        config.update({
            "data_identifier": f"{plans['plans_name']}_{name}",
            "spacing": [spec.factor * s for s in base["spacing"]],
            "median_image_size_in_voxels": [int(round(v / spec.factor)) for v in base["median_image_size_in_voxels"]],
            "patch_size": [edge] * len(base["patch_size"]),
        })
        purpose.append(f"1/{spec.factor} resolution and {edge}x{edge} patches")
    if batch_size is not None:
        config["batch_size"] = int(batch_size)
    arch = base["architecture"]
    stages = min(spec.stages or arch["n_stages"], arch["n_stages"])
    if spec.stages is not None or spec.feature_divisor != 1:
        # lists are replaced, not merged, by inheritance: write every per-stage list
        config["architecture"] = {
            "n_stages": stages, "n_conv_per_stage_decoder": arch["n_conv_per_stage_decoder"][:stages - 1],
            **{k: arch[k][:stages] for k in ("kernel_sizes", "strides", "n_conv_per_stage")},
            "features_per_stage": [max(8, f // spec.feature_divisor) for f in arch["features_per_stage"][:stages]]}
        purpose.append(f"{stages} stages, widths / {spec.feature_divisor}")
    config["notes"] = {"purpose": "CPU budget: " + ", ".join(purpose) + " (added by benchmarks/cpu_configurations.py)"}
    plans["configurations"][name] = config
    save_json(plans, plans_file)
    return config
