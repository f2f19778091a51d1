"""Figures for benchmarks: a per-case grid of raters, samples and per-rater predictions, and the
benchmark overview (metric bars + rater x prompt Dice heat map). Uses matplotlib's Agg canvas
directly, so importing this module never changes the global backend."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from diffoseg_auto.utilities.file_ops import atomic_write


def save_figure(fig: Figure, out_png: str | Path) -> None:
    """Write ``fig`` as a PNG, atomically (a killed run leaves no half-written figure)."""
    FigureCanvasAgg(fig)
    atomic_write(out_png, lambda p: fig.savefig(p, format="png", dpi=100, bbox_inches="tight"))


def _slice_index(rater_labels: np.ndarray) -> int:
    """For 3D: the slice (axis 0 of *S) with the most foreground in the union of the raters."""
    fg = (np.asarray(rater_labels) > 0).any(0)
    return int(fg.reshape(fg.shape[0], -1).sum(1).argmax())


def display_slice(image: np.ndarray, rater_labels: np.ndarray,
                  stacks: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """The 2D picture of a case: image (first channel of (C,*S) or (*S)), labels (R,*S) and label stacks
    (N,*S); 3D cases are cut at the slice with the most rater foreground."""
    labels = np.asarray(rater_labels)
    img = np.asarray(image)
    if img.ndim == labels.ndim:  # channel-first: show the first channel
        img = img[0]
    stacks = [None if s is None else np.asarray(s) for s in stacks]
    if labels.ndim - 1 == 3:
        z = _slice_index(labels)
        img, labels = img[z], labels[:, z]
        stacks = [None if s is None else s[:, z] for s in stacks]
    return img, labels, stacks


def draw_image_and_raters(axes_row, img: np.ndarray, labels: np.ndarray, mask: np.ndarray, names: list[str],
                          vmax: int) -> None:
    """First row of a case grid: the image, then each rater's mask (or 'not annotated')."""
    axes_row[0].imshow(img, cmap="gray")
    axes_row[0].set_title("image", fontsize=8)
    for k in range(labels.shape[0]):
        ax = axes_row[k + 1]
        ax.set_title(names[k], fontsize=8)
        if mask[k]:
            ax.imshow(labels[k], cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        else:
            ax.text(0.5, 0.5, "not annotated", ha="center", va="center", fontsize=7, transform=ax.transAxes)


@dataclass(frozen=True)
class CaseGridLayout:
    """The captions and size of a case grid."""
    rater_names: list[str] | None = None   # default: "rater 0", "rater 1", ...
    title: str | None = None
    max_samples: int = 8                   # samples drawn in the second row


def plot_case_grid(image: np.ndarray, rater_labels: np.ndarray, samples: np.ndarray | None,
                   rater_predictions: np.ndarray | None, out_png: str | Path, rater_mask: np.ndarray | None = None,
                   layout: CaseGridLayout = CaseGridLayout()) -> None:
    """Row 1: image and each rater's mask; row 2: predicted samples; row 3: per-rater predictions.

    image (C,*S) or (*S); rater_labels (R,*S); samples (N,*S) or None; rater_predictions (R,*S) or None;
    rater_mask (R,) bool (False: "not annotated"). 3D cases show the slice with the most rater foreground.
    """
    img, labels, (samples, rater_predictions) = display_slice(image, rater_labels, [samples, rater_predictions])
    R = labels.shape[0]
    names = layout.rater_names or [f"rater {k}" for k in range(R)]
    mask = np.ones(R, bool) if rater_mask is None else np.asarray(rater_mask, bool)
    n_s = 0 if samples is None else min(len(samples), layout.max_samples)
    ncols = max(1 + R, n_s, R if rater_predictions is not None else 0)
    nrows = 1 + (n_s > 0) + (rater_predictions is not None)
    fig = Figure(figsize=(1.8 * ncols, 1.9 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    vmax = max(1, int(labels.max()))
    draw_image_and_raters(axes[0], img, labels, mask, names, vmax)
    row = 1
    if n_s:
        for i in range(n_s):
            axes[row, i].imshow(samples[i], cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
            axes[row, i].set_title(f"sample {i}", fontsize=8)
        row += 1
    if rater_predictions is not None:
        for k in range(R):
            axes[row, k].imshow(rater_predictions[k], cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
            axes[row, k].set_title(f"prompt {names[k]}", fontsize=8)
    if layout.title:
        fig.suptitle(layout.title, fontsize=9)
    save_figure(fig, out_png)


def plot_benchmark(panels: list[dict], out_png: str | Path) -> None:
    """One row per dataset: grouped bars (metric x configuration) and the rater x prompt Dice heat map.

    Each panel: {"dataset": str, "bars": {configuration: {metric: (mean, std)}}, "metrics": order of the bars,
    "matrix": (R, R) array or None, "raters": [names], "matrix_label": str}.
    """
    n = max(1, len(panels))
    fig = Figure(figsize=(13, 4 * n))
    axes = fig.subplots(n, 2, squeeze=False, gridspec_kw={"width_ratios": [2.2, 1]})
    for row, panel in enumerate(panels):
        ax = axes[row, 0]
        configs = list(panel["bars"])
        metrics = panel.get("metrics") or list(dict.fromkeys(m for c in configs for m in panel["bars"][c]))
        width = 0.8 / max(1, len(configs))
        x = np.arange(len(metrics))
        for i, c in enumerate(configs):
            vals = [panel["bars"][c].get(m, (np.nan, np.nan)) for m in metrics]
            means = np.array([v[0] for v in vals], float)
            stds = np.nan_to_num(np.array([v[1] for v in vals], float))
            ax.bar(x + (i - (len(configs) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=c)
        ax.set_xticks(x)
        ax.set_xticklabels(metrics, rotation=30, ha="right", fontsize=8)
        ax.set_title(panel["dataset"])
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
        hm = axes[row, 1]
        matrix = panel.get("matrix")
        if matrix is None:
            hm.axis("off")
            hm.text(0.5, 0.5, "no rater x prompt matrix\n(Stage II summaries missing)", ha="center", va="center",
                    transform=hm.transAxes)
            continue
        m = np.asarray(matrix, float)
        im = hm.imshow(m, vmin=0, vmax=1, cmap="magma")
        names = panel.get("raters") or [str(k) for k in range(m.shape[1])]
        hm.set_xticks(range(m.shape[1]))
        hm.set_xticklabels(names[: m.shape[1]], rotation=45, ha="right", fontsize=7)
        hm.set_yticks(range(m.shape[0]))
        hm.set_yticklabels(names[: m.shape[0]], fontsize=7)
        hm.set_xlabel("rater (label)")
        hm.set_ylabel("prompt")
        hm.set_title(panel.get("matrix_label", "rater x prompt Dice"), fontsize=9)
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                hm.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.6 else "black")
        fig.colorbar(im, ax=hm, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, out_png)


def plot_reliability(bins: dict, out_png: str | Path, title: str = "") -> None:
    """Reliability diagram of pooled bins (calibration.reliability_bins): per bin of the predicted foreground
    probability p, the raters' mean foreground fraction q (bars; the diagonal is perfect calibration, a bar
    below it means overconfident foreground) and the share of counted pixels (lower panel, log scale)."""
    from diffoseg_auto.evaluation.calibration import NUM_BINS, bin_means, expected_calibration_error

    mean_p, mean_q, share = bin_means(bins)
    centres = (np.arange(NUM_BINS) + 0.5) / NUM_BINS
    fig = Figure(figsize=(4.2, 5.2))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = np.isfinite(mean_q)
    top.bar(centres[filled], mean_q[filled], width=1 / NUM_BINS, edgecolor="black", alpha=0.7,
            label="raters' foreground fraction")
    top.plot(mean_p[filled], mean_q[filled], "o-", color="tab:red", markersize=3, label="bin mean (p, q)")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("mean rater fraction q")
    top.legend(fontsize=7, loc="upper left")
    heading = f"ECE (pooled pixels) {expected_calibration_error(bins):.4f}"
    top.set_title(f"{title}\n{heading}" if title else heading, fontsize=8)
    bottom.bar(centres[share > 0], share[share > 0], width=1 / NUM_BINS, edgecolor="black", color="tab:gray")
    bottom.set_yscale("log")
    bottom.set_xlabel("predicted foreground probability p (samples' mean)")
    bottom.set_ylabel("pixel share")
    save_figure(fig, out_png)
