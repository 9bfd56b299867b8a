"""Figures of sequence results read from the store: sweep lines with replicate bands, ISM heatmaps.

The viz layer reads stored Datasets only; it never runs a model.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .figures import pyplot, save  # noqa: F401 (save: the figure writer of this module's figures)


def plot_sweep(ds: xr.Dataset, sequence, *, target=None, markers: dict[str, float] | None = None,
               center: bool = True, ax=None):
    """Return a matplotlib Figure: sweep delta against position, one line per window, ±std band.

    ``ds`` holds ``sweep_delta_mean``/``sweep_delta_std`` (sequence, window, position, target);
    ``sequence`` is a name or index; ``markers`` maps labels to positions drawn as red vertical lines
    (e.g. ``{"TSS": 150}``); ``center`` plots each window at its centre instead of its first base.
    """
    plt = pyplot()
    sel = _pick(ds, sequence, target)
    mean, std = sel["sweep_delta_mean"], sel["sweep_delta_std"]
    fig = ax.figure if ax is not None else plt.figure(figsize=(10, 4))
    ax = ax or fig.add_subplot(111)
    cmap = plt.get_cmap("viridis")
    n_w = mean.sizes["window"]
    lengths = ds["window_length"].values if "window_length" in ds.coords else mean["window"].values
    for i, w in enumerate(mean["window"].values):
        m = mean.isel(window=i).values
        s = std.isel(window=i).values
        x = mean["position"].values + ((int(lengths[i]) - 1) / 2 if center else 0)
        color = cmap(i / max(1, n_w - 1))
        ax.plot(x, m, color=color, lw=1.2, label=f"k={w}")
        if np.nanmax(s, initial=0) > 0:
            ax.fill_between(x, m - s, m + s, color=color, alpha=0.2, lw=0)
    for label, pos in (markers or {}).items():
        ax.axvline(pos, color="red", lw=1.5)
        ax.text(pos, ax.get_ylim()[1], f" {label}", color="red", va="top")
    ax.axhline(0, color="0.6", lw=0.8)
    name = sel["sequence"].values if "sequence" in sel.coords else sequence
    tname = sel["target"].values if "target" in sel.coords else ""
    ax.set(xlabel="position" + (" (window centre)" if center else " (window start)"),
           ylabel="Δ prediction (perturbed − reference)", title=f"perturbation sweep: {name} · {tname}")
    ax.legend(title="window", fontsize=8, ncol=2, loc="lower left")
    fig.tight_layout()
    return fig


def plot_ism(ds: xr.Dataset, sequence, *, target=None, start=None, end=None, ax=None):
    """Return a matplotlib Figure: ISM heatmap (base x position) of ``ism_delta``, diverging colours."""
    plt = pyplot()
    sel = _pick(ds, sequence, target)["ism_delta"]
    if start is not None or end is not None:
        sel = sel.sel(position=slice(start, None if end is None else end - 1))
    values = sel.transpose("base", "position").values
    fig = ax.figure if ax is not None else plt.figure(figsize=(max(6, min(20, values.shape[1] / 12)), 2.6))
    ax = ax or fig.add_subplot(111)
    lim = float(np.nanmax(np.abs(values))) or 1.0
    pos = sel["position"].values
    im = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest",
                   extent=(pos[0] - 0.5, pos[-1] + 0.5, 3.5, -0.5))
    ax.set_yticks(range(4), list(sel["base"].values))
    ax.set(xlabel="position", title=f"saturation mutagenesis: {sel['sequence'].values if 'sequence' in sel.coords else sequence}")
    fig.colorbar(im, ax=ax, label="Δ prediction", fraction=0.03)
    fig.tight_layout()
    return fig


def _pick(ds: xr.Dataset, sequence, target):
    sel = ds.isel(sequence=sequence) if isinstance(sequence, (int, np.integer)) else ds.sel(sequence=sequence)
    if "target" in sel.dims:
        sel = sel.isel(target=0) if target is None else (
            sel.isel(target=target) if isinstance(target, (int, np.integer)) else sel.sel(target=target))
    return sel
