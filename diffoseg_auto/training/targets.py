"""Diffusion targets x_0 from multi-rater label stacks (numpy, per batch).

Stage I (probabilistic consensus): per sample a random non-empty subset of the raters who
annotated that case is drawn, and its masks are fused into a target:

- ``vote`` (planned default): ONE coherent mask per draw. A random vote threshold k in 1..n
  (n = subset size, uniform) keeps class c where at least k of the n chosen raters mark c:
  k = 1 is the union, k = n the intersection, k > n/2 the majority, so all occur. Over draws
  the model learns a distribution over whole consensus masks, and its samples are masks a
  group of raters could have agreed on;
- ``soft``: per-voxel mean of the chosen raters' one-hot masks (a distribution over classes).
  With the exact posterior this trains per-voxel marginals: samples are independent per voxel
  (salt-and-pepper), not masks. Kept for comparison only;
- ``intersection``: a voxel keeps class c only if every chosen rater says c, else background;
- ``majority``: per-voxel majority vote; ties go to the LOWER class index (background first),
  so a 1:1 split between background and foreground stays background.

Stage II: per sample one random rater who annotated the case; its one-hot mask and its id.
Raters with ``rater_mask == False`` are never used.
"""
from __future__ import annotations

import numpy as np

from diffoseg_auto.plans.plans import CONSENSUS_MODES


def one_hot_np(labels: np.ndarray, num_classes: int, axis: int = 0) -> np.ndarray:
    """Integer labels -> float32 one-hot with the class axis inserted at ``axis`` ((*S) -> (K,*S) for axis 0)."""
    eye = np.eye(num_classes, dtype=np.float32)
    return np.moveaxis(eye[np.asarray(labels, dtype=np.int64)], -1, axis)


def _annotated(rater_mask: np.ndarray, where: str) -> np.ndarray:
    idx = np.flatnonzero(rater_mask)
    if idx.size == 0:
        raise ValueError(f"{where}: no rater annotated this case (rater_mask all False); it cannot be a training target.")
    return idx


def draw_rater_subset(rater_mask: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Random non-empty subset (sorted indices) of the annotating raters: size uniform in 1..n, then members."""
    idx = _annotated(rater_mask, "draw_rater_subset")
    size = rng.randint(1, idx.size + 1)
    return np.sort(rng.choice(idx, size=size, replace=False))


def fuse_by_vote(chosen: np.ndarray, num_classes: int, min_votes: int) -> np.ndarray:
    """(n,*S) labels -> (*S) labels: class c >= 1 where at least ``min_votes`` raters mark c; where several
    foreground classes pass, the one with most votes (ties: lower index); everywhere else background."""
    votes = np.stack([(chosen == c).sum(axis=0) for c in range(1, num_classes)])  # (K-1, *S)
    best = np.argmax(votes, axis=0)
    passed = np.take_along_axis(votes, best[None], axis=0)[0] >= min_votes
    return np.where(passed, best + 1, 0).astype(np.int64)


def fuse_raters(seg: np.ndarray, subset: np.ndarray, num_classes: int, mode: str,
                rng: np.random.RandomState | None = None) -> np.ndarray:
    """Fuse ``seg[subset]`` ((R,*S) labels) into a (K,*S) float32 target (``vote`` draws its threshold from rng)."""
    if mode not in CONSENSUS_MODES:
        raise ValueError(f"consensus_target must be one of {CONSENSUS_MODES}, got '{mode}' (plans training.consensus_target)")
    chosen = np.asarray(seg)[np.asarray(subset)]
    if mode == "vote":
        if rng is None:
            raise ValueError("fuse_raters: mode 'vote' draws a random threshold and needs rng")
        return one_hot_np(fuse_by_vote(chosen, num_classes, rng.randint(1, len(chosen) + 1)), num_classes)
    oh = one_hot_np(chosen, num_classes, axis=1)  # (n, K, *S)
    if mode == "soft":
        return oh.mean(axis=0).astype(np.float32)
    if mode == "intersection":
        agree = np.all(chosen == chosen[:1], axis=0)
        labels = np.where(agree, chosen[0], 0)
        return one_hot_np(labels, num_classes)
    votes = oh.sum(axis=0)  # (K, *S); argmax returns the first (lowest) class on ties
    return one_hot_np(np.argmax(votes, axis=0), num_classes)


def consensus_targets(seg: np.ndarray, rater_mask: np.ndarray, num_classes: int, mode: str,
                      rng: np.random.RandomState) -> np.ndarray:
    """Stage I batch targets: seg (B,R,*P) uint8, rater_mask (B,R) -> (B,K,*P) float32."""
    return np.stack([fuse_raters(seg[b], draw_rater_subset(rater_mask[b], rng), num_classes, mode, rng)
                     for b in range(seg.shape[0])])


def rater_targets(seg: np.ndarray, rater_mask: np.ndarray, num_classes: int,
                  rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Stage II batch targets: one random annotating rater per sample -> ((B,K,*P) float32 one-hot, (B,) int64 ids)."""
    ids = np.array([rng.choice(_annotated(rater_mask[b], "rater_targets")) for b in range(seg.shape[0])], dtype=np.int64)
    labels = seg[np.arange(seg.shape[0]), ids]
    return one_hot_np(labels, num_classes, axis=1), ids
