"""Write one case's predictions in the INPUT image's geometry (crop and resampling undone).

    OUT/consensus/<case><ending>        Stage I consensus: argmax of the consensus probability map
                                        (= mean one-hot over the N samples), reverted to the input geometry
    OUT/consensus/<case>.npz            --save_probabilities: 'probabilities' float16 (K, *S_orig)
    OUT/uncertainty/<case><ending>      per-voxel entropy (nats) of the consensus probabilities; float32 for
                                        volumetric endings, uint8 = round(255 * entropy / log K) for .png/.tif/.bmp
    OUT/raters/<rater>/<case><ending>   Stage II prediction with that rater's prompt (mean one-hot if several samples)
    OUT/samples/<case>.npz              --save_samples, each sample reverted with revert_labels:
                                        binary tasks (K == 2): 'packed' = np.packbits(samples.ravel()) and
                                        'shape' = (N, *S_orig) int64 (unpack: np.unpackbits(packed, count=prod(shape)));
                                        K > 2: 'samples' uint8 (N, *S_orig)
    OUT/disagreement/<case>.json        the case's predicted disagreement (evaluation/disagreement.py), written by
                                        prediction_run.py next to the export

All writes are atomic (image_io.write_*, utilities.file_ops.atomic_write).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffoseg_auto.io.image_io import NATURAL_IMAGE_ENDINGS, write_image, write_seg
from diffoseg_auto.plans.plans import ConfigurationPlan
from diffoseg_auto.preprocessing.export import revert_labels, revert_probabilities
from diffoseg_auto.utilities.file_ops import atomic_write


def mean_one_hot(samples: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, *S) labels -> (K, *S) float32 class frequencies over the samples."""
    samples = np.asarray(samples)
    return np.stack([(samples == c).mean(0, dtype=np.float32) for c in range(num_classes)]).astype(np.float32)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Per-voxel entropy in nats of (K, *S) probabilities (0 log 0 = 0)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(0).astype(np.float32)


def uncertainty_map(probs: np.ndarray, file_ending: str) -> np.ndarray:
    """Entropy as written: float32 nats, or uint8 0..255 (entropy / log K) for natural-image formats."""
    ent = entropy(probs)
    if file_ending.lower() in NATURAL_IMAGE_ENDINGS:
        k = max(int(probs.shape[0]), 2)
        return np.clip(np.round(ent / np.log(k) * 255.0), 0, 255).astype(np.uint8)
    return ent


def pack_samples(samples: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """The arrays stored in samples/<case>.npz (see the module docstring)."""
    samples = np.asarray(samples, dtype=np.uint8)
    if num_classes == 2:
        return {"packed": np.packbits(samples.ravel()), "shape": np.asarray(samples.shape, dtype=np.int64)}
    return {"samples": samples}


def unpack_samples(arrays: dict) -> np.ndarray:
    """Inverse of ``pack_samples`` (also reads the 'samples' form)."""
    if "packed" in arrays:
        shape = tuple(int(s) for s in arrays["shape"])
        return np.unpackbits(np.asarray(arrays["packed"]).ravel(), count=int(np.prod(shape))).reshape(shape).astype(np.uint8)
    return np.asarray(arrays["samples"], dtype=np.uint8)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed, atomically."""
    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    atomic_write(path, write)


@dataclass(frozen=True)
class ExportTarget:
    """Where and how every case of a run is written: the output folder, the raw images' file ending, the
    configuration the arrays were preprocessed with (to undo it) and the class count."""
    output_folder: Path
    file_ending: str
    configuration: ConfigurationPlan
    num_classes: int
    save_probabilities: bool = False   # also consensus/<case>.npz


def export_case(case: str, properties: dict, target: ExportTarget, consensus_probabilities: np.ndarray | None = None,
                samples: np.ndarray | None = None, rater_samples: dict[str, np.ndarray] | None = None) -> None:
    """Revert and write one case (``properties``: its preprocessing properties). Arrays are in preprocessed geometry:
    ``consensus_probabilities`` (K,*S), ``samples`` (N,*S) (written only if given), ``rater_samples`` {rater: (n,*S)}."""
    out, file_ending = Path(target.output_folder), target.file_ending
    configuration, num_classes = target.configuration, target.num_classes
    props = properties["original_props"]
    if consensus_probabilities is not None:
        probs = revert_probabilities(consensus_probabilities, properties, configuration)
        write_seg(np.argmax(probs, 0).astype(np.uint8), props, out / "consensus" / f"{case}{file_ending}")
        if target.save_probabilities:
            save_npz(out / "consensus" / f"{case}.npz", probabilities=probs.astype(np.float16))
        write_image(uncertainty_map(probs, file_ending), props, out / "uncertainty" / f"{case}{file_ending}")
    for rater, rs in (rater_samples or {}).items():
        rs = np.asarray(rs)
        if rs.shape[0] == 1:
            labels = revert_labels(rs[0], properties, configuration, num_classes)
        else:
            labels = np.argmax(revert_probabilities(mean_one_hot(rs, num_classes), properties, configuration), 0).astype(np.uint8)
        write_seg(labels, props, out / "raters" / rater / f"{case}{file_ending}")
    if samples is not None:
        reverted = np.stack([revert_labels(s, properties, configuration, num_classes) for s in np.asarray(samples)])
        save_npz(out / "samples" / f"{case}.npz", **pack_samples(reverted, num_classes))
