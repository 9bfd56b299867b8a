"""Per-feature summaries of attributions, overall and per group, with mergeable reductions.

``summarize_attributions(ds, by=...)`` reduces ``attribution`` (sample, feature, target) to, per
group (``"all"`` first, then each value of the grouping column):

* ``feature_attribution_mean`` (group, feature, target)
* ``feature_attribution_std`` (group, feature, target) — population std (ddof 0), as scvi-tools
* ``feature_attribution_n`` (group, feature, target) — number of non-NaN samples ("cells")
* ``feature_attribution_ci95`` (group, feature, target) — half-width 1.96 · std / √n

Each sample chunk becomes a partial ``(count, mean, M2)`` per group and these are merged with
Chan's parallel update in a tree (``dask.array.reduction``), so the full matrix is never held in
memory and the result does not depend on the chunking (up to float rounding).

The grouping column is any per-sample coordinate or variable: an obs column such as the true
label, or ``attribution_predicted`` (predicted label, categories stored in its attrs). The small
pandas tables of a computed summary (``feature_table``, ``top_features``, ``class_tables``,
``stacked_positive``) live in ``storage.summary_tables``, where storage exports and viz read them.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from ..storage.groups import decoded_attr
from ..storage.schema import FEATURE, GROUP, SAMPLE, TARGET, require, validate
from ..storage.summary_tables import ALL, class_tables, feature_table, stacked_positive, top_features  # noqa: F401


def _partial(a, codes, *, n_groups: int, include_all: bool):
    """Return ``(1, G, F, T, 3)`` float64 [count, mean, M2] of one sample block (NaN skipped)."""
    a = np.asarray(a, np.float64)
    g_total = n_groups + (1 if include_all else 0)
    out = np.zeros((1, g_total) + a.shape[1:] + (3,), np.float64)
    sets = []
    if include_all:
        sets.append(np.ones(a.shape[0], bool))
    sets += [codes == g for g in range(n_groups)]
    for gi, rows in enumerate(sets):
        sub = a[rows]
        ok = np.isfinite(sub)
        n = ok.sum(0)
        s = np.where(ok, sub, 0.0).sum(0)
        mean = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
        m2 = (np.where(ok, sub - mean, 0.0) ** 2).sum(0)
        out[0, gi, ..., 0] = n
        out[0, gi, ..., 1] = mean
        out[0, gi, ..., 2] = m2
    return out


def _merge(x, axis=None, keepdims=True):
    """Merge [count, mean, M2] partials stacked along axis 0 (Chan et al.)."""
    x = np.asarray(x)
    n = x[..., 0].sum(0)
    mean = np.divide((x[..., 0] * x[..., 1]).sum(0), n, out=np.zeros_like(n), where=n > 0)
    m2 = (x[..., 2] + x[..., 0] * (x[..., 1] - mean[None]) ** 2).sum(0)
    out = np.stack([n, mean, m2], axis=-1)
    return out[None] if keepdims else out


def _identity(x, axis=None, keepdims=True):
    return x


def _sample_column(ds: xr.Dataset, by: str, dim: str):
    if by not in ds.variables:
        cols = [v for v in ds.variables if ds[v].dims == (dim,) and v != dim]
        raise ValueError(f"label column {by!r} is not in the dataset; its per-{dim} columns are {cols}: pass one "
                         f"of them as by= (for AnnData, an obs column)")
    col = ds[by]
    if col.dims != (dim,):
        raise ValueError(f"label column {by!r} has dims {col.dims}; a grouping column must have dims ({dim!r},)")
    return col


def summarize_attributions(ds: xr.Dataset, *, by: str | None = None, groups=None, var: str = "attribution",
                           include_all: bool = True, split_every: int | None = None) -> xr.Dataset:
    """Return the lazy per-group feature summary of ``ds[var]`` (see the module doc).

    ``by``: the per-sample grouping column (None: only ``"all"``). ``groups``: the group values and
    their order (default: the sorted unique values of a numpy column; for a lazy column, its
    ``categories`` attr). Samples whose label is not in ``groups`` count only in ``"all"``.

    Parameters
    ----------
    ds : xarray.Dataset
        Holds ``ds[var]`` (sample, feature, target) and, with ``by``, the per-sample label column.
    by : str, optional
        Per-sample grouping column (e.g. ``bulk_labels``); None: only the ``all`` group.
    groups : sequence, optional
        Group values and their order (see above).
    var : str, default "attribution"
        The attribution variable (``fastshap_attribution`` for FastSHAP).
    include_all : bool, default True
        Also summarise all samples together (group ``all``).
    split_every : int, optional
        Tree-reduction fan-in of the mergeable (count, mean, M2) reductions.

    Returns
    -------
    xarray.Dataset
        Lazy ``feature_attribution_mean``, ``_std`` (ddof 0), ``_n`` and ``_ci95`` (the 95%
        interval's half-width), each (group, feature, target).

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.pbmc import pbmc_path
    >>> cells = it.read_h5ad(pbmc_path(), sample_chunk=20).isel(sample=slice(0, 40))
    >>> classes = ("B", "T")
    >>> spec = it.ModelSpec(factory="interpretome.pbmc:cell_classifier", kwargs={"n_classes": 2},
    ...                     input_kind="dense", targets=classes)
    >>> att = it.attribute(cells, spec, n_steps=8, target="all")
    >>> summ = it.summarize_attributions(att, by="bulk_labels")
    >>> summ["feature_attribution_mean"].dims
    ('group', 'feature', 'target')
    >>> summ.sizes["feature"], summ.sizes["target"], str(summ["group"].values[0])
    (765, 2, 'all')
    """
    if var not in ds.variables:
        raise ValueError(f"dataset has no {var!r}: compute it with interpretome.tasks.attribute.attribute")
    a = ds[var]
    if a.dims != (SAMPLE, FEATURE, TARGET):
        raise ValueError(f"{var!r} has dims {a.dims}; summaries need (sample, feature, target)")
    require(ds, var, "attribution", "interpretome.tasks.attribute.attribute")
    data = a.data if isinstance(a.data, da.Array) else da.from_array(a.values, chunks=(256, -1, -1))
    data = data.rechunk((data.chunks[0], -1, -1))
    labels: list = []
    if by is not None:
        col = _sample_column(ds, by, SAMPLE)
        if groups is None:
            if isinstance(col.data, da.Array):
                groups = decoded_attr(col.attrs, "categories")  # JSON text when read from a store
                if groups is None:
                    raise ValueError(f"label column {by!r} is lazy and has no 'categories' attr: pass groups=[...]")
            else:
                groups = sorted(pd.unique(np.asarray(col.values)).tolist(), key=str)
        labels = [str(g) for g in groups]
        if ALL in labels and include_all:
            raise ValueError(f"a group is named {ALL!r}, which collides with the overall summary: pass include_all=False")
        lut = {g: i for i, g in enumerate(labels)}
        if isinstance(col.data, da.Array):
            codes = col.data.astype(str).map_blocks(
                lambda b, lut=lut: np.array([lut.get(str(v), -1) for v in b], np.int64), dtype=np.int64)
        else:
            # the smallest signed type holding -1 and every code (int16 below 256 groups): the codes travel in the graph
            small = np.result_type(np.int8, np.min_scalar_type(len(labels)))
            codes = da.from_array(np.array([lut.get(str(v), -1) for v in col.values], small))
        codes = codes.rechunk((data.chunks[0],))
    else:
        codes = da.zeros(data.shape[0], chunks=(data.chunks[0],), dtype=np.int64)
    if not include_all and not labels:
        raise ValueError("include_all=False needs by= (otherwise there is no group to summarise)")
    names = ([ALL] if include_all else []) + labels
    g_total = len(names)
    partial = da.blockwise(_partial, "sgftq", data, "sft", codes, "s", new_axes={"g": g_total, "q": 3},
                           adjust_chunks={"s": 1}, dtype=np.float64, meta=np.empty((0,) * 5, np.float64),
                           n_groups=len(labels), include_all=include_all)
    merged = da.reduction(partial, chunk=_identity, combine=_merge, aggregate=_merge, axis=0, keepdims=False,
                          dtype=np.float64, split_every=split_every, concatenate=True,
                          meta=np.empty((0,) * 4, np.float64))
    n = merged[..., 0]
    mean = da.where(n > 0, merged[..., 1], np.nan)
    std = da.where(n > 0, da.sqrt(merged[..., 2] / da.maximum(n, 1)), np.nan)
    ci = 1.96 * std / da.sqrt(da.maximum(n, 1))
    dims = (GROUP, FEATURE, TARGET)
    out = xr.Dataset(
        {"feature_attribution_mean": (dims, mean.astype(np.float32)),
         "feature_attribution_std": (dims, std.astype(np.float32)),
         "feature_attribution_n": (dims, n.astype(np.int64)),
         "feature_attribution_ci95": (dims, ci.astype(np.float32))},
        coords={GROUP: names, FEATURE: ds[FEATURE].values, TARGET: ds[TARGET].values},
        attrs={"group_by": by or "", "source_variable": var},
    )
    if "feature_idx" in ds.coords:
        out = out.assign_coords(feature_idx=(FEATURE, np.asarray(ds["feature_idx"].values)))
    validate(out)
    return out
