"""Figures of linear-model coefficients and their correlations, read from stored Datasets.

* ``plot_heatmap``        class x feature coefficients of one model entry (diverging colours);
* ``plot_clustermap``     the same, rows and columns ordered by hierarchical clustering;
* ``plot_class_kde``      per-class density of the coefficients;
* ``plot_class_means``    per-class mean coefficient (bar, with standard error);
* ``plot_scatter_grid``   per class, multi-class vs one-vs-rest coefficient over features, with
  Pearson, Spearman and CCC in each title;
* ``plot_ccc_matrix``     an all-pairs CCC matrix (square or condensed), clustered.

The viz layer never fits or runs a model.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr

from ..storage.schema import CLASS, FEATURE, MODEL
from .figures import pyplot, save

__all__ = ["plot_heatmap", "plot_clustermap", "plot_class_kde", "plot_class_means", "plot_scatter_grid",
           "plot_ccc_matrix", "save"]


def _entry(ds: xr.Dataset, model) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Return (label, values (class, feature), class names, feature names) of the present cells of an entry."""
    labels = [str(m) for m in ds[MODEL].values]
    if isinstance(model, (int, np.integer)):
        if not 0 <= model < len(labels):
            raise ValueError(f"model index {model} is out of range: the store has {len(labels)} model entries")
        idx = int(model)
    else:
        if str(model) not in labels:
            raise ValueError(f"model {model!r} is not in the store; it has {labels}")
        idx = labels.index(str(model))
    e = ds.isel({MODEL: idx})
    cp = np.asarray(e["class_present"].values, bool) if "class_present" in e.coords else np.ones(ds.sizes[CLASS], bool)
    fp = (np.asarray(e["feature_present"].values, bool) if "feature_present" in e.coords
          else np.ones(ds.sizes[FEATURE], bool))
    vals = np.asarray(e["coefficient"].values)[np.ix_(cp, fp)]
    return labels[idx], vals, _names(ds[CLASS].values[cp]), _names(ds[FEATURE].values[fp])


def _names(values) -> np.ndarray:
    """Return names as a numpy array of Python str (works for object, <U and StringDType arrays)."""
    return np.array([str(v) for v in np.asarray(values).tolist()], dtype=object)


def _limit(v: np.ndarray) -> float:
    m = float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 1.0
    return m or 1.0


def plot_heatmap(ds: xr.Dataset, model, *, max_features: int = 200):
    """Return a Figure: heatmap of ``coefficient`` (class x feature) of one model entry (name or index).

    Diverging colours centred on 0; at most ``max_features`` columns (those with the largest
    absolute coefficient) so large feature sets stay legible.
    """
    plt = pyplot()
    label, v, cls, feats = _entry(ds, model)
    if v.shape[1] > max_features:
        keep = np.sort(np.argsort(-np.nanmax(np.abs(v), axis=0))[:max_features])
        v, feats = v[:, keep], feats[keep]
    fig, ax = plt.subplots(figsize=(min(18, 3 + 0.12 * v.shape[1]), 1.5 + 0.35 * v.shape[0]))
    lim = _limit(v)
    im = ax.imshow(v, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_yticks(range(len(cls)), cls)
    if v.shape[1] <= 60:
        ax.set_xticks(range(len(feats)), feats, rotation=90, fontsize=6)
    else:
        ax.set_xticks([])
    ax.set_xlabel(f"feature ({v.shape[1]})")
    ax.set_title(f"coefficients of {label}")
    fig.colorbar(im, ax=ax, label="coefficient")
    fig.tight_layout()
    return fig


def plot_clustermap(ds: xr.Dataset, model, *, method: str = "average", metric: str = "euclidean"):
    """Return a Figure: seaborn clustermap of one entry's coefficients (rows = classes, cols = features)."""
    pyplot()
    import pandas as pd
    import seaborn as sns

    label, v, cls, feats = _entry(ds, model)
    if v.shape[0] < 2 or v.shape[1] < 2:
        raise ValueError(f"model {label!r} has a {v.shape} coefficient table; clustering needs at least 2 x 2")
    lim = _limit(v)
    g = sns.clustermap(pd.DataFrame(np.nan_to_num(v), index=cls, columns=feats), method=method, metric=metric,
                       cmap="RdBu_r", vmin=-lim, vmax=lim, figsize=(min(18, 4 + 0.1 * v.shape[1]), 3 + 0.4 * v.shape[0]),
                       xticklabels=v.shape[1] <= 60, cbar_kws={"label": "coefficient"})
    g.figure.suptitle(f"clustered coefficients of {label}", y=1.0)
    return g.figure


def plot_class_kde(ds: xr.Dataset, model, *, bw_method=None):
    """Return a Figure: per-class kernel density (scipy ``gaussian_kde``) of one entry's coefficients."""
    plt = pyplot()
    from scipy.stats import gaussian_kde

    label, v, cls, _ = _entry(ds, model)
    fig, ax = plt.subplots(figsize=(7, 4))
    lo, hi = np.nanmin(v), np.nanmax(v)
    pad = 0.1 * (hi - lo or 1.0)
    grid = np.linspace(lo - pad, hi + pad, 256)
    cmap = plt.get_cmap("tab10" if len(cls) <= 10 else "tab20")
    for k, c in enumerate(cls):
        x = v[k][np.isfinite(v[k])]
        if x.size >= 2 and np.ptp(x) > 0:
            ax.plot(grid, gaussian_kde(x, bw_method=bw_method)(grid), label=c, color=cmap(k % cmap.N))
    ax.set_xlabel("coefficient")
    ax.set_ylabel("density")
    ax.set_title(f"coefficient density per class: {label}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_class_means(ds: xr.Dataset, model):
    """Return a Figure: bar of the mean coefficient per class (error bars: standard error)."""
    plt = pyplot()
    label, v, cls, _ = _entry(ds, model)
    mean = np.nanmean(v, axis=1)
    sem = np.nanstd(v, axis=1, ddof=1) / np.sqrt(np.isfinite(v).sum(axis=1))
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(cls) + 2), 4))
    ax.bar(range(len(cls)), mean, yerr=sem, color=np.where(mean >= 0, "#c0392b", "#2e86c1"), capsize=3)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(cls)), cls, rotation=45, ha="right")
    ax.set_ylabel("mean coefficient")
    ax.set_title(f"mean coefficient per class: {label}")
    fig.tight_layout()
    return fig


def plot_scatter_grid(ds: xr.Dataset, comparison, *, ncols: int = 4):
    """Return a Figure: per class, multi-class (x) vs one-vs-rest (y) coefficients over features.

    ``ds`` holds ``coefficient`` and ``coefficient_correlation`` (the stored coefficients group);
    ``comparison`` is a name like ``final:CP`` or an index. Each title gives Pearson, Spearman
    and CCC from the stored correlations.
    """
    plt = pyplot()
    names = [str(c) for c in ds["comparison"].values]
    idx = comparison if isinstance(comparison, (int, np.integer)) else (
        names.index(str(comparison)) if str(comparison) in names else None)
    if idx is None:
        raise ValueError(f"comparison {comparison!r} is not in the store; it has {names}")
    name = str(ds["comparison_model_name"].values[idx])
    fset = str(ds["comparison_feature_set"].values[idx])
    labels = [str(m) for m in ds[MODEL].values]
    multi = f"{name}:{fset}:multiclass"
    binary = f"{name}:{fset}:ovr"
    for lab in (multi, binary):
        if lab not in labels:
            raise ValueError(f"model entry {lab!r} is not in the store; it has {labels}")
    _, vm, cls, _ = _entry(ds, multi)
    _, vb, clsb, _ = _entry(ds, binary)
    corr = ds["coefficient_correlation"].isel(comparison=idx)
    n = len(cls)
    nc = min(ncols, n)
    nr = math.ceil(n / nc)
    fig, axes = plt.subplots(nr, nc, figsize=(3.4 * nc, 3.2 * nr), squeeze=False)
    order_b = {c: i for i, c in enumerate(clsb)}
    for k, c in enumerate(cls):
        ax = axes[k // nc][k % nc]
        x, y = vm[k], vb[order_b[c]]
        ax.scatter(x, y, s=8, alpha=0.6, color="#34495e")
        r = corr.sel({CLASS: c}).values
        ax.set_title(f"{c}\nPearson {r[0]:.2f}  Spearman {r[1]:.2f}  CCC {r[2]:.2f}", fontsize=8)
        ax.axhline(0, color="0.7", lw=0.5)
        ax.axvline(0, color="0.7", lw=0.5)
        ax.set_xlabel("multi-class coefficient", fontsize=7)
        ax.set_ylabel("one-vs-rest coefficient", fontsize=7)
        ax.tick_params(labelsize=6)
    for k in range(n, nr * nc):
        axes[k // nc][k % nc].axis("off")
    fig.suptitle(f"multi-class vs one-vs-rest coefficients: {name} / {fset}")
    fig.tight_layout()
    return fig


def plot_ccc_matrix(ds: xr.Dataset, *, max_features: int = 300):
    """Return a Figure: the all-pairs CCC matrix (``ccc_matrix`` or ``ccc_pair``), rows/cols clustered.

    At most ``max_features`` features (the first ones) are drawn; NaN (constant features) in grey.
    """
    plt = pyplot()
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    if "ccc_matrix" in ds:
        m = np.asarray(ds["ccc_matrix"].values, np.float64)
        names = _names(ds["feature_i"].values)
    elif "ccc_pair" in ds:
        c = np.asarray(ds["ccc_pair"].values, np.float64)
        n = int(round((1 + math.sqrt(1 + 8 * c.size)) / 2))
        m = squareform(np.nan_to_num(c, nan=0.0))
        m[np.triu_indices(n, 1)] = c
        m.T[np.triu_indices(n, 1)] = c
        np.fill_diagonal(m, 1.0)
        fi, fj = _names(ds["feature_i"].values), _names(ds["feature_j"].values)
        names = np.concatenate([fi[:1], fj[: n - 1]]) if n > 1 else fi[:1]
    else:
        raise ValueError("the dataset has neither ccc_matrix nor ccc_pair: open the group written by all_pairs_ccc")
    m, names = m[:max_features, :max_features], names[:max_features]
    if m.shape[0] > 2:
        d = 1.0 - np.nan_to_num(m, nan=0.0)
        d = (d + d.T) / 2
        np.fill_diagonal(d, 0.0)
        order = leaves_list(linkage(squareform(np.clip(d, 0, None), checks=False), "average"))
        m, names = m[np.ix_(order, order)], names[order]
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.8")
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    if len(names) <= 50:
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_title(f"all-pairs CCC ({len(names)} features, clustered)")
    fig.colorbar(im, ax=ax, label="CCC")
    fig.tight_layout()
    return fig


def save_all(figs: dict[str, object], out_dir: str | Path) -> list[Path]:
    """Save ``{file stem: Figure}`` as PNGs under ``out_dir`` and return the paths."""
    return [save(fig, Path(out_dir) / f"{stem}.png") for stem, fig in figs.items()]
