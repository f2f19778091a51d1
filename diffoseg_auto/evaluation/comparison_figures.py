"""Figures of the method comparison: one bar chart per metric (rows of the table, error bars = std
over folds, strict and dpersona side by side) and sample grids of every method on the same case."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from diffoseg_auto.evaluation.calibration import NOT_AVAILABLE
from diffoseg_auto.evaluation.figures import display_slice, draw_image_and_raters, save_figure


def plot_metric_bars(table: pd.DataFrame, metric: str, out_png: str | Path, title: str = "") -> None:
    """Bars of ``metric`` for every row of ``table`` (columns method, mode, metric, mean, std), one colour per mode."""
    sub = table[table["metric"] == metric]
    methods = list(dict.fromkeys(sub["method"]))
    modes = list(dict.fromkeys(sub["mode"]))
    fig = Figure(figsize=(max(5.0, 1.1 * len(methods) + 2), 3.6))
    ax = fig.subplots()
    width = 0.8 / max(1, len(modes))
    x = np.arange(len(methods))
    for i, mode in enumerate(modes):
        rows = sub[sub["mode"] == mode].set_index("method")
        means = np.array([rows["mean"].get(m, np.nan) for m in methods], float)
        stds = np.nan_to_num(np.array([rows["std"].get(m, np.nan) for m in methods], float))
        offsets = x + (i - (len(modes) - 1) / 2) * width
        ax.bar(offsets, means, width, yerr=stds, capsize=3, label=mode)
        for xi in offsets[np.isnan(means) & np.isin(methods, rows.index)]:  # scored, no value: n/a, not zero
            ax.text(xi, 0, NOT_AVAILABLE, ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(x)
    ax.set_xticklabels(methods, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(title or metric, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, out_png)


def plot_method_grid(image: np.ndarray, rater_labels: np.ndarray, rater_mask: np.ndarray, rater_names: list[str],
                     method_samples: dict[str, np.ndarray | None], out_png: str | Path, title: str = "",
                     max_samples: int = 8) -> None:
    """Row 1: the image and each rater's mask; then one row of samples per method (3D: the slice with
    the most rater foreground). image (C,*S) or (*S), rater_labels (R,*S), samples (N,*S)."""
    methods = list(method_samples)
    img, labels, stacks = display_slice(image, rater_labels, [method_samples[m] for m in methods])
    R = labels.shape[0]
    ncols = max(1 + R, 1 + max([min(len(s), max_samples) for s in stacks if s is not None] or [0]))
    fig = Figure(figsize=(1.6 * ncols, 1.7 * (1 + len(methods))))
    axes = fig.subplots(1 + len(methods), ncols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    vmax = max(1, int(labels.max()))
    draw_image_and_raters(axes[0], img, labels, np.asarray(rater_mask, bool), rater_names, vmax)
    for row, (method, samples) in enumerate(zip(methods, stacks), start=1):
        axes[row, 0].text(0.95, 0.5, method, ha="right", va="center", fontsize=7, transform=axes[row, 0].transAxes)
        if samples is None:
            continue
        for i in range(min(len(samples), max_samples)):
            axes[row, i + 1].imshow(samples[i], cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=8)
    save_figure(fig, out_png)
