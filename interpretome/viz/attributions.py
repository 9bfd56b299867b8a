"""Figures of attributions read from stored results; never runs a model.

* ``plot_top_features`` — top-N features by mean attribution, bars with the 1.96·std/√n interval;
* ``plot_class_grid`` — per class, its top-N positive and negative features (scvi-tools layout);
* ``plot_stacked`` — stacked horizontal bars of positive contributions by class;
* ``plot_image_overlay`` — SHAP-style red (positive) / blue (negative) overlay on an image patch,
  optionally titled with the predicted probability (PathFlowAI's figure);
* ``plot_sequence_logo`` — per-base attribution logo (logomaker) above a per-base track.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from ..storage.summary_tables import class_tables, feature_table, stacked_positive
from .figures import pyplot
from .figures import save as _save


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` (folders created, cropped to its artists), close it and return the path."""
    return _save(fig, path, dpi, tight=True)


def _bars(ax, df, color, title):
    y = np.arange(len(df))[::-1]
    err = 1.96 * df["attribution_std"].to_numpy() / np.sqrt(np.maximum(df["cells"].to_numpy(), 1))
    ax.barh(y, df["attribution_mean"], xerr=err, color=color, alpha=0.85, ecolor="0.3", capsize=2)
    ax.set_yticks(y)
    ax.set_yticklabels(df["feature"], fontsize=8)
    ax.axvline(0, color="0.4", lw=0.6)
    ax.set_title(title, fontsize=9)


def plot_top_features(summary: xr.Dataset, *, n: int = 10, group: str = "all", target: str | None = None, ax=None):
    """Return a Figure: the ``n`` features of largest |mean attribution| for one group and target, ±95% interval."""
    plt = pyplot()
    df = feature_table(summary, group=group, target=target)
    df = df.reindex(df["attribution_mean"].abs().sort_values(ascending=False).index).head(n)
    df = df.sort_values("attribution_mean", ascending=False)
    fig = ax.figure if ax is not None else plt.figure(figsize=(5, 0.3 * n + 1.2))
    ax = ax or fig.add_subplot(111)
    colors = np.where(df["attribution_mean"] >= 0, "#d62728", "#1f77b4")
    _bars(ax, df, colors, f"top {n} features — group {group}, target {target or 'default'}")
    ax.set_xlabel("mean attribution (±1.96·std/√n)")
    return fig


def plot_class_grid(summary: xr.Dataset, *, n: int = 5, classes=None, ncols: int = 4):
    """Return a Figure with, per class, its top-``n`` positive (red) and negative (blue) features."""
    plt = pyplot()
    tables = class_tables(summary, n=n, classes=classes)
    k = len(tables)
    ncols = min(ncols, k)
    nrows = int(np.ceil(k / ncols))
    fig, axes = plt.subplots(nrows * 2, ncols, figsize=(3.4 * ncols, 2.0 * n / 5 * nrows * 2 + 1), squeeze=False)
    for i, (cls, t) in enumerate(tables.items()):
        r, c = divmod(i, ncols)
        _bars(axes[2 * r, c], t["positive"], "#d62728", f"{cls}: positive")
        _bars(axes[2 * r + 1, c], t["negative"], "#1f77b4", f"{cls}: negative")
    for j in range(k, nrows * ncols):
        r, c = divmod(j, ncols)
        axes[2 * r, c].axis("off")
        axes[2 * r + 1, c].axis("off")
    fig.tight_layout()
    return fig


def plot_stacked(summary: xr.Dataset, *, n: int = 5, classes=None, ax=None):
    """Return a Figure: for the union of each class's top-``n`` features, stacked positive mean attribution by class."""
    plt = pyplot()
    df = stacked_positive(summary, n=n, classes=classes)
    fig = ax.figure if ax is not None else plt.figure(figsize=(7, 0.25 * len(df) + 1.5))
    ax = ax or fig.add_subplot(111)
    cmap = plt.get_cmap("tab10" if df.shape[1] <= 10 else "tab20")
    left = np.zeros(len(df))
    y = np.arange(len(df))[::-1]
    for i, c in enumerate(df.columns):
        ax.barh(y, df[c], left=left, color=cmap(i % cmap.N), label=str(c))
        left += df[c].to_numpy()
    ax.set_yticks(y)
    ax.set_yticklabels(df.index, fontsize=8)
    ax.set_xlabel("positive mean attribution, stacked by class")
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    return fig


def _red_blue():
    from matplotlib.colors import LinearSegmentedColormap

    # shap's red_transparent_blue: blue (negative) -> transparent -> red (positive)
    colors = [(0.0, 0.545, 0.988, 1.0), (0.0, 0.545, 0.988, 0.0), (1.0, 0.0, 0.318, 0.0), (1.0, 0.0, 0.318, 1.0)]
    return LinearSegmentedColormap.from_list("red_transparent_blue", list(zip([0, 0.5, 0.5, 1], colors)))


def plot_image_overlay(image: np.ndarray, attribution: np.ndarray, *, probability: float | None = None,
                       label: str | None = None, ax=None):
    """Return a Figure: grey image with the channel-summed attribution as a red/blue overlay.

    ``image`` and ``attribution`` are ``(C, H, W)`` (or ``(H, W)``); the colour scale is symmetric
    around 0 (red positive, blue negative, transparent near 0). ``probability`` (and ``label``)
    are written in the title, as PathFlowAI does.
    """
    plt = pyplot()
    img = np.asarray(image, np.float64)
    att = np.asarray(attribution, np.float64)
    grey = img.mean(0) if img.ndim == 3 else img
    heat = att.sum(0) if att.ndim == 3 else att
    fig = ax.figure if ax is not None else plt.figure(figsize=(3.2, 3.4))
    ax = ax or fig.add_subplot(111)
    ax.imshow(grey, cmap="gray", alpha=0.35)
    vmax = float(np.nanmax(np.abs(heat))) or 1.0
    im = ax.imshow(heat, cmap=_red_blue(), vmin=-vmax, vmax=vmax)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="SHAP value")
    ax.set_xticks([])
    ax.set_yticks([])
    if probability is not None:
        ax.set_title(f"{label + ': ' if label else ''}p = {probability:.3f}", fontsize=9)
    elif label:
        ax.set_title(label, fontsize=9)
    return fig


def plot_sequence_logo(ds: xr.Dataset, sequence, *, target=None, start: int | None = None, end: int | None = None):
    """Return a Figure: per-base attribution logo (logomaker) and the per-base track of one sequence.

    ``ds`` holds ``sequence_attribution`` (sequence, position, base, target); ``sequence`` is a
    name or index; ``start``/``end`` restrict the positions shown.
    """
    import logomaker

    plt = pyplot()
    names = [str(s) for s in ds["sequence"].values]
    i = names.index(str(sequence)) if str(sequence) in names else int(sequence)
    targets = [str(t) for t in ds["target"].values]
    t = 0 if target is None else targets.index(str(target))
    a = ds["sequence_attribution"].isel(sequence=i, target=t)
    if "sequence_length" in ds:
        a = a.isel(position=slice(0, int(ds["sequence_length"].values[i])))
    a = a.isel(position=slice(start, end))
    mat = np.nan_to_num(np.asarray(a.values, np.float64))
    pos = np.asarray(a["position"].values)
    import pandas as pd

    df = pd.DataFrame(mat, columns=[str(b) for b in ds["base"].values], index=pos)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, len(pos) / 8), 3.6), sharex=True,
                                   gridspec_kw={"height_ratios": [2, 1]})
    logomaker.Logo(df, ax=ax1, color_scheme="classic")
    ax1.set_ylabel("attribution")
    ax1.set_title(f"{names[i]} — target {targets[t]}", fontsize=9)
    ax2.plot(pos, mat.sum(1), color="0.2", lw=0.8)
    ax2.axhline(0, color="0.6", lw=0.5)
    ax2.set_ylabel("per base")
    ax2.set_xlabel("position")
    ax2.set_xlim(pos[0] - 0.5, pos[-1] + 0.5)
    return fig
