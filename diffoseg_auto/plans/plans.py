"""Typed, human-editable plans (DiffOSegPlans.json).

Plans are plain JSON; these dataclasses give them names, defaults and validation. A
configuration may inherit from another (``"inherits_from": "2d"``) and override single
fields, nested sections being merged key by key. Every field is documented in
documentation/planning.md.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from diffoseg_auto.configuration import DENOISER_LAYOUTS, FINAL_STEPS, PROMPT_BLOCKS, X0_READOUTS
from diffoseg_auto.errors import MissingFileError, UserError

SCHEMA_VERSION = 1
# Stage I training targets (diffoseg_auto.training.targets implements them)
CONSENSUS_MODES = ("vote", "soft", "intersection", "majority")


class PlansValidationError(UserError, ValueError):
    pass


@dataclass
class ArchitecturePlan:
    """The denoiser U-Net. Lists have one entry per stage (resolution level)."""

    n_stages: int
    features_per_stage: list[int]
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    n_conv_per_stage: list[int]
    n_conv_per_stage_decoder: list[int]
    conv_bias: bool = True
    norm: str = "instance"            # instance | batch | group
    nonlin: str = "leakyrelu"         # leakyrelu | relu | silu
    deep_supervision: bool = False
    time_embedding_dim: int = 128
    num_prompts: int = 8              # Stage II prompt bank size
    prompt_dim: int = 32              # channels of each learnable prompt
    denoiser: str = "cached_encoder"  # cached_encoder | concat (paper layout) | reference_openai
    # cached_encoder: width of the light x_t path relative to the image encoder (features // x_t_width_divisor)
    x_t_width_divisor: int = 4
    # reference_openai only: base channels, channel multipliers, attention resolutions (paper's network)
    reference: dict = field(default_factory=dict)


@dataclass
class DiffusionPlan:
    num_timesteps: int = 250          # T
    schedule: str = "cosine"          # cosine | linear
    schedule_shift: float = 1.0       # >1 shifts noise towards higher levels (resolution-dependent)
    sampling_steps: int = 25          # S <= T, for validation and prediction
    num_samples: int = 16             # N >= number of raters
    final_step: str = "denoise"       # FINAL_STEPS: argmax | sample of p(x0 | x_1); denoise = argmax of the network's p
    # how p(x0 | x_t) is read from the network's x0 output p: 'network' = p itself; 'bayes' = q(x0 | x_t, x0 ~ p)
    # = q_posterior(x_t, p, t, 0), the reading under which the KL loss's single-normaliser posterior is exact
    # (the CE loss and the final step then agree with the sampler); see documentation/method.md
    x0_given_xt: str = "bayes"


@dataclass
class TrainingPlan:
    optimizer: str = "adamw"          # adam | adamw
    initial_lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "poly"         # poly | constant
    poly_exponent: float = 0.9
    num_epochs: int = 100
    iterations_per_epoch: int = 250
    num_val_iterations_per_epoch: int = 25
    ema_decay: float = 0.999
    grad_clip: float = 12.0
    consensus_target: str = "vote"    # vote | intersection | majority | soft (targets.py)
    oversample_foreground_percent: float = 0.33
    num_val_samples: int = 4          # samples per case in the end-of-stage validation
    # weight of an auxiliary cross-entropy on the predicted x_0 at every t (D3PM's hybrid loss);
    # 0 = the paper's pure KL loss. See documentation/method.md, "Training loss".
    x0_ce_weight: float = 0.0
    # network autocast: auto (bf16 where native, fp16 + GradScaler on older GPUs, else fp32) | bf16 | fp16 | fp32
    precision: str = "auto"


@dataclass
class Stage2Plan:
    num_epochs: int = 50
    iterations_per_epoch: int = 250
    initial_lr: float = 1e-3          # the new rater parameters start at zero and have far to go
    freeze_backbone: bool = False
    prompt_block: str = "residual"    # residual (the project's) | paper (official DiffOSeg design)
    # samples per rater prompt; the rater's mask is the argmax of their mean (official: 10)
    num_samples_per_rater: int = 4


@dataclass(frozen=True)
class StageSchedule:
    """The schedule of one training stage, whichever section of the plans holds it (ConfigurationPlan.schedule)."""

    num_epochs: int
    iterations_per_epoch: int
    initial_lr: float
    val_iterations: int               # validation-loss batches per epoch (training.num_val_iterations_per_epoch)
    freeze_backbone: bool             # Stage II only: train the prompt block and rater input alone


@dataclass
class AugmentationPlan:
    mirror_axes: list[int] = field(default_factory=list)
    rotation_degrees: list[float] = field(default_factory=lambda: [-180.0, 180.0])  # in-plane (2d) / all axes (3d)
    rotate_only_in_plane: bool = False  # anisotropic 3d: rotate around axis 0 only
    scaling: list[float] = field(default_factory=lambda: [0.7, 1.4])
    p_rotation: float = 0.2
    p_scaling: float = 0.2
    p_gamma: float = 0.3
    p_noise: float = 0.1
    p_blur: float = 0.2
    p_brightness: float = 0.15
    p_contrast: float = 0.15


@dataclass
class InferencePlan:
    step_size: float = 0.5
    # mirroring TTA costs 4x (2D) / 8x (3D) sampling; on LIDC fold 0 it did not lower GED (results.md)
    use_mirroring: bool = False
    # memory for one batched denoiser call: windows x mirrorings x samples/prompts rows share it
    batch_memory_mb: int = 2048
    precision: str = "auto"           # as training.precision


@dataclass
class ConfigurationPlan:
    data_identifier: str
    spatial_dims: int                  # 2 or 3 (the network's dimensionality)
    patch_size: list[int]
    batch_size: int
    spacing: list[float]               # target spacing, array axis order
    median_image_size_in_voxels: list[int]
    normalization_schemes: list[str]   # per channel: ct | zscore | none | rescale_0_1
    use_mask_for_norm: list[bool]
    resampling_order_data: int         # spline order for images
    resampling_order_seg: int          # order for one-hot label resampling (1 = linear on one-hot)
    architecture: ArchitecturePlan
    diffusion: DiffusionPlan = field(default_factory=DiffusionPlan)
    training: TrainingPlan = field(default_factory=TrainingPlan)
    stage2: Stage2Plan = field(default_factory=Stage2Plan)
    augmentation: AugmentationPlan = field(default_factory=AugmentationPlan)
    inference: InferencePlan = field(default_factory=InferencePlan)
    slice_axis: int | None = None      # 2d configuration of 3D data: axis of the preprocessed volume to slice along
    notes: dict = field(default_factory=dict)  # the planner's reasoning, human readable

    def schedule(self, stage: int) -> StageSchedule:
        """Stage I's schedule is in ``training``, Stage II's in ``stage2`` (the JSON keeps nnU-Net-like sections);
        every reader asks here instead of picking the section by stage."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        section = self.training if stage == 1 else self.stage2
        return StageSchedule(num_epochs=int(section.num_epochs), iterations_per_epoch=int(section.iterations_per_epoch),
                             initial_lr=float(section.initial_lr),
                             val_iterations=int(self.training.num_val_iterations_per_epoch),
                             freeze_backbone=stage == 2 and bool(self.stage2.freeze_backbone))


@dataclass
class Plans:
    dataset_name: str
    plans_name: str
    num_classes: int                  # including background
    raters: list[str]
    num_input_channels: int
    original_median_spacing: list[float]
    original_median_shape: list[int]
    foreground_intensity_properties_per_channel: dict
    configurations: dict[str, ConfigurationPlan]
    schema_version: int = SCHEMA_VERSION
    planner: str = "ExperimentPlanner"
    label_names: dict = field(default_factory=dict)

    @property
    def num_raters(self) -> int:
        return len(self.raters)

    def get_configuration(self, name: str) -> ConfigurationPlan:
        if name not in self.configurations:
            raise PlansValidationError(
                f"Configuration '{name}' is not in plans '{self.plans_name}' of {self.dataset_name}. "
                f"Available: {sorted(self.configurations)}"
            )
        return self.configurations[name]

    def to_dict(self) -> dict:
        d = asdict(self)
        return d


# ---------------------------------------------------------------- parsing and validation

def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise PlansValidationError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name: f for f in fields(cls)}
    data = {k: v for k, v in data.items() if (cls, k) not in _RETIRED_FIELDS}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise PlansValidationError(f"{where}: unknown field(s) {unknown}. Known: {sorted(names)}")
    kwargs = {}
    for name, f in names.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise PlansValidationError(f"{where}: required field '{name}' is missing")
            continue
        value = data[name]
        sub = _SECTION_TYPES.get((cls, name))
        kwargs[name] = _build(sub, value, f"{where}.{name}") if sub is not None else value
    return cls(**kwargs)


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise PlansValidationError(f"{where}: {msg}")


def validate_configuration(c: ConfigurationPlan, where: str) -> None:
    d = c.spatial_dims
    _check(d in (2, 3), where, f"spatial_dims must be 2 or 3, got {d}")
    _check(len(c.patch_size) == d and all(int(p) > 0 for p in c.patch_size), where, f"patch_size must have {d} positive entries, got {c.patch_size}")
    _check(int(c.batch_size) >= 1, where, "batch_size must be >= 1")
    a = c.architecture
    aw = f"{where}.architecture"
    _check(a.n_stages >= 1, aw, "n_stages must be >= 1")
    for key in ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage"):
        _check(len(getattr(a, key)) == a.n_stages, aw, f"{key} needs one entry per stage ({a.n_stages}), has {len(getattr(a, key))}")
    _check(len(a.n_conv_per_stage_decoder) == a.n_stages - 1, aw, f"n_conv_per_stage_decoder needs n_stages-1 = {a.n_stages - 1} entries")
    for key in ("kernel_sizes", "strides"):
        _check(all(len(k) == d for k in getattr(a, key)), aw, f"every entry of {key} needs {d} values")
    _check(a.denoiser in DENOISER_LAYOUTS, aw, f"denoiser must be one of {', '.join(DENOISER_LAYOUTS)}, got '{a.denoiser}'")
    import numpy as np
    total = np.prod(np.array(a.strides), axis=0)
    _check(all(int(p) % int(s) == 0 for p, s in zip(c.patch_size, total)), where,
           f"patch_size {c.patch_size} must be divisible by the product of strides {total.tolist()}")
    df = c.diffusion
    _check(df.schedule in ("cosine", "linear"), f"{where}.diffusion", f"schedule must be cosine or linear, got '{df.schedule}'")
    _check(1 <= df.sampling_steps <= df.num_timesteps, f"{where}.diffusion", f"sampling_steps must be in 1..num_timesteps ({df.num_timesteps}), got {df.sampling_steps}")
    _check(df.final_step in FINAL_STEPS, f"{where}.diffusion", f"final_step must be one of {', '.join(FINAL_STEPS)}, got '{df.final_step}'")
    _check(df.x0_given_xt in X0_READOUTS, f"{where}.diffusion", f"x0_given_xt must be one of {', '.join(X0_READOUTS)}, got '{df.x0_given_xt}'")
    _check(df.num_samples >= 1, f"{where}.diffusion", "num_samples must be >= 1")
    t = c.training
    _check(t.consensus_target in CONSENSUS_MODES, f"{where}.training", f"consensus_target must be one of {', '.join(CONSENSUS_MODES)}, got '{t.consensus_target}'")
    _check(t.optimizer in ("adam", "adamw"), f"{where}.training", "optimizer must be adam or adamw")
    _check(0 <= t.ema_decay < 1, f"{where}.training", "ema_decay must be in [0, 1)")
    _check(t.x0_ce_weight >= 0, f"{where}.training", f"x0_ce_weight must be >= 0 (0 = pure KL loss), got {t.x0_ce_weight}")
    _check(c.stage2.prompt_block in PROMPT_BLOCKS, f"{where}.stage2", f"prompt_block must be one of {', '.join(PROMPT_BLOCKS)}, got '{c.stage2.prompt_block}'")
    _check(c.stage2.num_samples_per_rater >= 1, f"{where}.stage2", f"num_samples_per_rater must be >= 1, got {c.stage2.num_samples_per_rater}")
    for section in ("training", "inference"):
        prec = getattr(c, section).precision
        _check(prec in ("auto", "bf16", "fp16", "fp32"), f"{where}.{section}", f"precision must be auto, bf16, fp16 or fp32, got '{prec}'")
    _check(int(c.inference.batch_memory_mb) >= 1, f"{where}.inference", "batch_memory_mb must be >= 1")
    _check(all(0 <= ax < d for ax in c.augmentation.mirror_axes), f"{where}.augmentation", f"mirror_axes must be in 0..{d - 1}")
    for s in c.normalization_schemes:
        _check(s in ("ct", "zscore", "none", "rescale_0_1"), where, f"unknown normalization scheme '{s}' (ct | zscore | none | rescale_0_1)")


def _resolve_inheritance(raw_cfgs: dict, where: str) -> dict:
    resolved: dict[str, dict] = {}

    def merge(base: dict, over: dict) -> dict:
        out = copy.deepcopy(base)
        for k, v in over.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
        return out

    def get(name: str, chain: tuple) -> dict:
        if name in resolved:
            return resolved[name]
        if name not in raw_cfgs:
            raise PlansValidationError(f"{where}: configurations.{chain[-1]} inherits from unknown '{name}'. "
                                       f"Known configurations: {sorted(raw_cfgs)}")
        if name in chain:
            raise PlansValidationError(f"{where}: configurations.{chain[0]}: inheritance cycle "
                                       f"{' -> '.join(chain + (name,))}")
        cfg = dict(raw_cfgs[name])
        parent = cfg.pop("inherits_from", None)
        if parent is not None:
            cfg = merge(get(parent, chain + (name,)), cfg)
        resolved[name] = cfg
        return cfg

    return {n: get(n, ()) for n in raw_cfgs}


def plans_from_dict(d: dict, where: str = "plans") -> Plans:
    cfgs = d.get("configurations", {}) if isinstance(d, dict) else None
    if not isinstance(cfgs, dict) or not all(isinstance(c, dict) for c in cfgs.values()):
        raise PlansValidationError(f"{where}: not a plans file (a JSON object whose 'configurations' maps names to "
                                   "objects). Restore your edit, or plan again with diffoseg_plan_experiment.")
    d = dict(d)
    if d.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise PlansValidationError(f"{where}: schema_version {d.get('schema_version')} is not supported (expected {SCHEMA_VERSION}). Re-run diffoseg_plan_experiment.")
    cfgs = _resolve_inheritance(d.pop("configurations", {}), where)
    plans = _build(Plans, {**d, "configurations": {}}, where)
    for name, c in cfgs.items():
        cp = _build(ConfigurationPlan, c, f"{where}: configurations.{name}")
        validate_configuration(cp, f"{where}: configurations.{name}")
        plans.configurations[name] = cp
    return plans


def load_plans(path: str | Path) -> Plans:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: plans file not found. Run `diffoseg_plan_and_preprocess -d <id>` first.")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PlansValidationError(f"{path}: not valid JSON ({e}). Fix the syntax of the hand edit.") from None
    return plans_from_dict(d, where=str(path))


def save_plans(plans: Plans, path: str | Path) -> None:
    from diffoseg_auto.utilities.file_ops import atomic_write_text

    atomic_write_text(path, json.dumps(plans.to_dict(), indent=2))


# fields older plans may hold that no longer mean anything; dropped on load so trained models stay loadable
_RETIRED_FIELDS: dict[tuple[type, str], str] = {
    (InferencePlan, "windows_per_batch"): "replaced by inference.batch_memory_mb",
    (ConfigurationPlan, "previous_stage"): "never read",
}

_SECTION_TYPES: dict[tuple[type, str], Any] = {
    (ConfigurationPlan, "architecture"): ArchitecturePlan,
    (ConfigurationPlan, "diffusion"): DiffusionPlan,
    (ConfigurationPlan, "training"): TrainingPlan,
    (ConfigurationPlan, "stage2"): Stage2Plan,
    (ConfigurationPlan, "augmentation"): AugmentationPlan,
    (ConfigurationPlan, "inference"): InferencePlan,
}
