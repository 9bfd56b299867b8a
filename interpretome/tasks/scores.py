"""Clustering scores of an embedding: silhouette (ASW), Davies-Bouldin, Calinski-Harabasz, and folds.

``clustering_scores(ds, vector=..., label=..., batch=...)`` returns, lazily:

- ``score_value`` (metric,): ``asw_label``, ``davies_bouldin_label``, ``calinski_harabasz_label`` and,
  with a batch, ``asw_batch``, ``davies_bouldin_batch``, ``calinski_harabasz_batch``;
- ``score_silhouette_label`` / ``score_silhouette_batch`` (item,): each item's silhouette with the
  label (batch) as clusters; NaN for items outside the subsample;
- ``score_silhouette_class`` (class,): mean silhouette of each label (sklearn's per-sample values
  averaged per label);
- ``score_sampled`` (item,) bool: the rows the scores use (all, or the seeded subsample).

Conventions. ``convention="sklearn"`` (default) gives exactly ``sklearn.metrics.silhouette_score``
(and ``davies_bouldin_score``, ``calinski_harabasz_score``) with the label or the batch as
clusters. ``convention="scib"`` gives scib's ``silhouette`` (label ASW rescaled to (ASW + 1) / 2)
and ``silhouette_batch`` (for each label with 2 <= batches < cells: 1 - |silhouette of the cells
with their batch as clusters|, averaged per label, then over labels). In scib-metrics' terms
(``tests/test_scib_metrics.py`` asserts each): scib ``asw_label`` = ``silhouette_label(X, labels)``,
sklearn ``asw_label`` = ``silhouette_label(..., rescale=False)``, scib ``asw_batch`` =
``silhouette_batch(X, labels, batch)`` and 1 - it = ``silhouette_batch(..., rescale=False)``;
sklearn's ``asw_batch`` (all cells, batch as clusters) has no scib-metrics counterpart.

The silhouette is exact and distributed: items are cut into blocks; each task computes one
``(block_i, block_j)`` tile (i <= j) of pairwise distances as a GEMM of augmented rows, in row
strips that stay in cache, and reduces it at once on both sides to per-item sums of distances to
every (label, batch) cluster (rows sorted by cluster, so the sums are over contiguous runs), so
memory is O(block * strip + n * clusters), never n x n, and the time is near that of the distance
GEMMs alone (``benchmarks/bench_silhouette.py``). One pass gives the label, the batch and the scib
per-label batch silhouettes.

Subsample (``sample_size``): the rows are ``RandomState(seed).permutation(n)[:sample_size]`` —
the draw ``sklearn.metrics.silhouette_score(sample_size=, random_state=seed)`` makes — stored in
``score_sampled``; Davies-Bouldin and Calinski-Harabasz use the same rows.

``summarize_folds`` turns a tidy table of per-fold scores into mean, SD (ddof 1), SEM and a 95 %
t-interval per metric, plus the folds with the lowest and highest batch ASW.
"""

from __future__ import annotations

import dask
import dask.array as da
from dask.highlevelgraph import HighLevelGraph
from dask.utils import apply
import numpy as np
import pandas as pd
import xarray as xr

from ..engine.blocks import require_vars
from ..storage.embedding_io import after_check, check_finite_rows, finite_rows_check
from ..storage.schema import CLASS, FOLD, ITEM, METRIC, validate


CONVENTIONS = ("sklearn", "scib")
METRICS = ("euclidean", "cosine")


# --- labels as codes ------------------------------------------------------------------------------

def _classes_of(arr: xr.DataArray, name: str, classes=None, param: str = "label_classes") -> np.ndarray:
    if classes is not None:
        return np.asarray(classes)
    if isinstance(arr.data, da.Array):
        raise ValueError(f"{name!r} is dask-backed, so its classes are unknown without a compute: pass "
                         f"{param}= (or load it with .load() first)")
    values = np.asarray(arr.values)
    if values.dtype.kind == "f" and np.isnan(values).any():
        raise ValueError(f"{name!r} has NaN labels: drop those items or fill them with a label")
    return np.unique(values)


def _encode_block(values: np.ndarray, classes: np.ndarray, name: str) -> np.ndarray:
    pos = np.clip(np.searchsorted(classes, values), 0, classes.size - 1)
    bad = classes[pos] != values
    if bad.any():
        raise ValueError(f"{name!r} holds values {np.unique(values[bad])[:5].tolist()} that are not among the "
                         f"classes given: add them to classes=")
    return pos.astype(np.int64)


def _codes(arr: xr.DataArray, classes: np.ndarray, chunks, name: str) -> da.Array:
    if not isinstance(arr.data, da.Array):     # labels in memory: encode now (no compute involved)
        return da.from_array(_encode_block(np.asarray(arr.values), classes, name), chunks=(chunks,))
    data = arr.data.rechunk((chunks,))
    return data.map_blocks(_encode_block, classes, name, dtype=np.int64, meta=np.empty((0,), np.int64))


# --- blocked pairwise sums -------------------------------------------------------------------------
#
# Each row block is prepared once: its rows sorted by cluster code, in float64, centred for the
# euclidean metric and augmented with their squared norms. Each pair of blocks (i <= j: the distance
# matrix is symmetric) is one task computing its tile of squared distances as ONE GEMM,
#     [-2 x_i, |x_i|^2, 1] @ [x_j, 1, |x_j|^2]^T = |x_i|^2 + |x_j|^2 - 2 x_i.x_j,
# in row strips that stay in cache, then sqrt, then the per-cluster sums of both sides as sums over
# contiguous runs (the rows are sorted by code): of columns for the rows of i, of rows for those of j.

_STRIP = 256        # rows of one strip of a tile: strip x block float64 temporaries stay in cache


def _prepare_block(x: np.ndarray, centre: np.ndarray, codes: np.ndarray, *, metric: str) -> dict:
    """Return a block ready for tiles: its rows sorted by code (``order``), augmented (b, F + 2) float64
    ``[x - centre, |x - centre|^2, 1]`` (cosine: unit rows), the present ``clusters`` and their run ``starts``."""
    order = np.argsort(codes, kind="stable")
    x = np.asarray(x, dtype=np.float64)[order]
    out = np.empty((x.shape[0], x.shape[1] + 2))
    if metric == "cosine":
        norm = np.linalg.norm(x, axis=1)
        norm[norm == 0] = 1.0
        np.divide(x, norm[:, None], out=out[:, :-2])
    else:
        np.subtract(x, centre, out=out[:, :-2])
    out[:, -2] = np.einsum("ij,ij->i", out[:, :-2], out[:, :-2])
    out[:, -1] = 1.0
    sorted_codes = np.asarray(codes)[order]
    clusters, starts = np.unique(sorted_codes, return_index=True)
    return {"rows": out, "order": order, "clusters": clusters, "starts": starts}


def _pair_sums(bi: dict, bj: dict, *, n_clusters: int, metric: str, diagonal: bool):
    """Return (si (bi, K), sj (bj, K) or None), in each block's sorted row order: the per-cluster distance
    sums of block i's rows over block j's rows and, off the diagonal, of block j's rows over block i's."""
    pi, pj = bi["rows"], bj["rows"]
    f = pi.shape[1] - 2
    if metric == "cosine":
        a, b = pi[:, :f], pj[:, :f]
    else:
        a = pi.copy()
        a[:, :f] *= -2.0
        b = np.empty_like(pj)
        b[:, :f] = pj[:, :f]
        b[:, f] = 1.0
        b[:, f + 1] = pj[:, f]
    bt = np.ascontiguousarray(b.T)
    si = np.zeros((pi.shape[0], n_clusters))
    sj = None if diagonal else np.zeros((n_clusters, pj.shape[0]))
    ends_i = np.append(bi["starts"][1:], pi.shape[0])
    for r0 in range(0, pi.shape[0], _STRIP):
        r1 = min(r0 + _STRIP, pi.shape[0])
        d = a[r0:r1] @ bt
        if metric == "cosine":
            np.subtract(1.0, d, out=d)
        np.maximum(d, 0, out=d)
        if metric != "cosine":
            np.sqrt(d, out=d)
        if diagonal:
            r = np.arange(r0, r1)
            d[r - r0, r] = 0.0
        si[r0:r1, bj["clusters"]] = np.add.reduceat(d, bj["starts"], axis=1)
        if sj is not None:
            for k, s, e in zip(bi["clusters"], bi["starts"], ends_i):
                s, e = max(s, r0), min(e, r1)
                if s < e:
                    sj[k] += d[s - r0:e - r0].sum(axis=0)
    return si, (None if sj is None else sj.T)


def _gather_sums(block: dict, own, other) -> np.ndarray:
    """Return the (b, K) sums of a block in its original row order: ``own`` pairs (i, j >= i) give [0],
    ``other`` pairs (j < i) give [1]."""
    total = own[0][0].copy()
    for p in own[1:]:
        total += p[0]
    for p in other:
        total += p[1]
    out = np.empty_like(total)
    out[block["order"]] = total
    return out


def cluster_distance_sums(x: da.Array, codes: da.Array, n_clusters: int, *, metric: str = "euclidean") -> da.Array:
    """Return (n, K) lazy float64 sums of distances from each item to the items of each cluster code.

    ``x`` (n, feature) and ``codes`` (n,) int64 in 0..K-1 share their row chunks (one block per
    tile side). Each task computes one (block_i, block_j) tile, i <= j, in cache-sized strips and
    reduces it at once on both sides, so memory is O(block^2 / strips + n * K), never n x n; the
    arithmetic is the n^2 (F + 2) / 2 multiply-adds of the symmetric distance GEMM plus n^2 adds of
    the per-cluster sums. Float64 throughout; the euclidean rows are centred first (on their mean,
    a lazy reduction), which keeps ``|a|^2 + |b|^2 - 2ab`` accurate.
    """
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {METRICS}")
    x = x.rechunk({1: -1})
    codes = codes.rechunk((x.chunks[0],))
    f = x.shape[1]
    centre = (x.astype(np.float64).mean(axis=0) if metric == "euclidean" else da.zeros((f,), chunks=f)).rechunk(-1)
    nb = len(x.chunks[0])
    token = dask.base.tokenize(x, codes, n_clusters, metric)
    prep, pair, name = f"silhouette-prep-{token}", f"silhouette-pair-{token}", f"silhouette-sums-{token}"
    dsk = {}
    for i in range(nb):
        dsk[(prep, i)] = (apply, _prepare_block, [(x.name, i, 0), (centre.name, 0), (codes.name, i)],
                          {"metric": metric})
    for i in range(nb):
        for j in range(i, nb):
            dsk[(pair, i, j)] = (apply, _pair_sums, [(prep, i), (prep, j)],
                                 {"n_clusters": n_clusters, "metric": metric, "diagonal": i == j})
    for i in range(nb):
        dsk[(name, i, 0)] = (_gather_sums, (prep, i), [(pair, i, j) for j in range(i, nb)],
                             [(pair, j, i) for j in range(i)])
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x, centre, codes])
    return da.Array(graph, name, chunks=(x.chunks[0], (n_clusters,)), dtype=np.float64,
                    meta=np.empty((0, 0), np.float64))


def _silhouette_from_sums(sums: np.ndarray, own: np.ndarray, counts: np.ndarray, allowed: np.ndarray | None = None):
    """Return (b,) silhouettes from per-cluster distance sums (b, K), own cluster (b,), sizes (K,).

    ``allowed`` (b, K) bool restricts the "other clusters" of each row (scib: same label only).
    Follows sklearn: singletons and rows with a = b = 0 get 0.
    """
    rows = np.arange(own.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = sums[rows, own] / (counts[own] - 1)
        mean = sums / counts[None, :]
    other = np.broadcast_to(counts[None, :] > 0, sums.shape).copy()
    if allowed is not None:
        other = other & allowed
    other[rows, own] = False
    b = np.where(other, mean, np.inf).min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (b - a) / np.maximum(a, b)
    return np.nan_to_num(s)


def _silhouettes_block(sums, lab, bat, counts, *, n_batch: int, scib: bool) -> np.ndarray:
    """Return (b, 3): silhouette by label, by batch, and scib's per-label batch silhouette (NaN: skipped)."""
    n_lab = counts.size // n_batch
    c3 = counts.reshape(n_lab, n_batch)
    s3 = sums.reshape(-1, n_lab, n_batch)
    out = np.empty((sums.shape[0], 3))
    out[:, 0] = _silhouette_from_sums(s3.sum(2), lab, c3.sum(1))
    if n_batch > 1:
        out[:, 1] = _silhouette_from_sums(s3.sum(1), bat, c3.sum(0))
    else:
        out[:, 1] = np.nan
    if scib and n_batch > 1:
        rows = np.arange(lab.size)
        s_l = s3[rows, lab]                                  # (b, batch) sums within the own label
        c_l = c3[lab]                                        # (b, batch) sizes within the own label
        # the cluster sizes differ per row (they are those of the row's own label)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = s_l[rows, bat] / (c_l[rows, bat] - 1)
            mean = s_l / c_l
        other = c_l > 0
        other[rows, bat] = False
        bmin = np.where(other, mean, np.inf).min(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.nan_to_num((bmin - a) / np.maximum(a, bmin))
        n_b = (c_l > 0).sum(1)
        size = c_l.sum(1)
        skip = (n_b == 1) | (n_b == size)
        out[:, 2] = np.where(skip, np.nan, 1.0 - np.abs(s))
    else:
        out[:, 2] = np.nan
    return out


# --- Davies-Bouldin and Calinski-Harabasz --------------------------------------------------------

def _class_moments(x, c, *, k: int) -> np.ndarray:
    """Return (1, K, F + 1): per-cluster feature sums and (last column) counts of one block."""
    out = np.zeros((1, k, x.shape[1] + 1))
    onehot = np.zeros((c.size, k))
    onehot[np.arange(c.size), c] = 1.0
    out[0, :, :-1] = onehot.T @ x.astype(np.float64)
    out[0, :, -1] = onehot.sum(0)
    return out


def _class_spread(x, c, centroids, *, k: int) -> np.ndarray:
    """Return (1, K, 2): per-cluster sums of distances and of squared distances to the centroid."""
    diff = x.astype(np.float64) - centroids[c]
    sq = (diff * diff).sum(1)
    out = np.zeros((1, k, 2))
    np.add.at(out[0, :, 0], c, np.sqrt(sq))
    np.add.at(out[0, :, 1], c, sq)
    return out


def _db_ch(moments: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Return [davies_bouldin, calinski_harabasz] from cluster moments (K, F+1) and spreads (K, 2)."""
    counts = moments[:, -1]
    present = counts > 0
    sums, counts, spread = moments[present, :-1], counts[present], spread[present]
    k = counts.size
    n = counts.sum()
    if k < 2 or k >= n:
        raise ValueError(f"Davies-Bouldin and Calinski-Harabasz need 2 <= clusters < items; got {k} clusters "
                         f"for {int(n)} items: check the label column")
    centroids = sums / counts[:, None]
    intra = spread[:, 0] / counts
    cd = np.sqrt(((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(-1))
    if np.allclose(intra, 0) or np.allclose(cd, 0):
        db = 0.0
    else:
        cd[cd == 0] = np.inf
        db = float(np.mean(np.max((intra[:, None] + intra[None, :]) / cd, axis=1)))
    mean = sums.sum(0) / n
    extra = float((counts * ((centroids - mean) ** 2).sum(1)).sum())
    intra_disp = float(spread[:, 1].sum())
    ch = 1.0 if intra_disp == 0 else extra * (n - k) / (intra_disp * (k - 1))
    return np.array([db, ch])


def davies_bouldin_calinski(x: da.Array, codes: da.Array, n_clusters: int) -> da.Array:
    """Return a lazy (2,) array [Davies-Bouldin, Calinski-Harabasz] of ``x`` (n, F) clustered by ``codes``."""
    x = x.rechunk({1: -1})
    codes = codes.rechunk((x.chunks[0],))
    moments = da.blockwise(_class_moments, "ikf", x, "if", codes, "i", new_axes={"k": n_clusters},
                           adjust_chunks={"i": 1, "f": lambda f: f + 1}, concatenate=True, dtype=np.float64,
                           meta=np.empty((0, 0, 0), np.float64), k=n_clusters).sum(0)
    centroids = moments[:, :-1] / da.maximum(moments[:, -1:], 1)
    spread = da.blockwise(_class_spread, "ikz", x, "if", codes, "i", centroids, "kf",
                          new_axes={"k": n_clusters, "z": 2}, adjust_chunks={"i": 1}, concatenate=True,
                          dtype=np.float64, meta=np.empty((0, 0, 0), np.float64), k=n_clusters).sum(0)
    return da.map_blocks(_db_ch, moments.rechunk(-1), spread.rechunk(-1), drop_axis=1, chunks=((2,),),
                         dtype=np.float64)


# --- the task -------------------------------------------------------------------------------------

def sample_indices(n: int, sample_size: int | None, seed: int) -> np.ndarray:
    """Return sorted indices of the scored rows: sklearn's ``RandomState(seed).permutation(n)[:sample_size]``."""
    if sample_size is None or sample_size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.RandomState(seed).permutation(n)[: int(sample_size)]).astype(np.int64)


def _scatter_block(index: np.ndarray, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.full(index.shape, np.nan)
    lo, hi = np.searchsorted(rows, [index[0], index[-1] + 1]) if index.size else (0, 0)
    pos = np.searchsorted(rows[lo:hi], index)
    hit = (pos < hi - lo) & (rows[lo:hi][np.minimum(pos, max(hi - lo - 1, 0))] == index) if hi > lo else np.zeros(index.shape, bool)
    out[hit] = values[lo:hi][pos[hit]]
    return out


def clustering_scores(
    ds: xr.Dataset,
    *,
    vector: str = "item_vector",
    label: str = "item_label",
    batch: str | None = None,
    convention: str = "sklearn",
    metric: str = "euclidean",
    sample_size: int | None = None,
    seed: int = 0,
    block: int = 2048,
    label_classes=None,
    batch_classes=None,
) -> xr.Dataset:
    """Return the lazy clustering scores of ``ds[vector]`` (item, feature|component) by ``label`` (and ``batch``).

    See the module docstring for the variables and conventions. ``block`` is the number of items
    per distance tile side (memory per task ~ 8 * block^2 bytes). Nothing is computed. Raises
    ``ValueError`` for an unknown convention or metric, labels with NaN, or fewer than 2 labels.

    Rows of ``ds[vector]`` holding NaN or inf are refused as ``embed`` refuses them
    (``storage.embedding_io.check_finite_rows``: how many rows, the first few indices and item
    labels): eagerly, before any graph is built, when the vector is numpy-backed; for a dask-backed
    vector by a cheap lazy reduction (a few integers per chunk) that every output depends on, so
    the error is raised at compute time and no score is ever computed from such rows.

    Parameters
    ----------
    ds : xarray.Dataset
        Holds ``ds[vector]`` (item, feature or component), ``ds[label]`` and optionally ``ds[batch]``
        (item,).
    vector, label, batch : str
        Variable names (the defaults are what ``read_embedding_input`` / ``embed`` write).
    convention : {"sklearn", "scib"}, default "sklearn"
        ASW convention: scikit-learn's silhouette, or scib's rescaled label / batch ASW.
    metric : {"euclidean", "cosine"}, default "euclidean"
    sample_size : int, optional
        Score a seeded subsample (scikit-learn's own draw) of this many items.
    seed : int, default 0
    block : int, default 2048
    label_classes, batch_classes : sequence, optional
        The classes of a dask-backed label / batch column.

    Returns
    -------
    xarray.Dataset
        Lazy ``score_value`` (metric) — ``asw_label`` (and the batch ASW with ``batch``),
        ``davies_bouldin``, ``calinski_harabasz`` — with the per-item silhouettes
        ``score_silhouette_label`` (item), the per-class means ``score_silhouette_class`` (class)
        and ``score_sampled`` (item).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> import interpretome as it
    >>> from sklearn.metrics import silhouette_score
    >>> rng = np.random.default_rng(0)
    >>> vec = np.concatenate([rng.normal(0, 1, (50, 5)), rng.normal(4, 1, (50, 5))])
    >>> labels = np.repeat(["a", "b"], 50)
    >>> items = xr.Dataset({"item_vector": (("item", "feature"), vec)}, coords={"item_label": ("item", labels)})
    >>> scores = it.clustering_scores(items, block=32).compute()    # distances in 32 x 32 tiles
    >>> bool(np.isclose(float(scores["score_value"].sel(metric="asw_label")), silhouette_score(vec, labels)))
    True
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention {convention!r} is not one of {CONVENTIONS}")
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {METRICS}")
    require_vars(ds, (vector, label) + ((batch,) if batch else ()), "interpretome.storage.embedding_io / embed()")
    arr = ds[vector]
    if arr.ndim != 2 or arr.dims[0] != ITEM:
        raise ValueError(f"{vector!r} has dims {arr.dims}; scores need (item, feature) or (item, component)")
    n = arr.shape[0]
    item_names = arr[ITEM].values if ITEM in arr.coords else None
    finite = None
    if isinstance(arr.data, da.Array):
        finite = finite_rows_check(arr.data, item_names, name=vector, purpose="scoring")
    else:
        check_finite_rows(np.asarray(arr.values), np.arange(n), item_names, name=vector, purpose="scoring")
    rows = sample_indices(n, sample_size, seed)
    m = rows.size
    lab_classes = _classes_of(ds[label], label, label_classes)
    if lab_classes.size < 2:
        raise ValueError(f"{label!r} has {lab_classes.size} class; silhouette needs at least 2 labels")
    bat_classes = _classes_of(ds[batch], batch, batch_classes, "batch_classes") if batch else np.array(["-"])
    n_lab, n_bat = lab_classes.size, bat_classes.size
    block = int(block)

    x = da.asarray(arr.data)
    lab = _codes(ds[label], lab_classes, x.chunks[0], label)
    bat = _codes(ds[batch], bat_classes, x.chunks[0], batch) if batch else da.zeros(n, chunks=x.chunks[0], dtype=np.int64)
    if m < n:
        x, lab, bat = x[rows], lab[rows], bat[rows]
    x = x.rechunk((block, -1))
    lab, bat = lab.rechunk((block,)), bat.rechunk((block,))
    combo = lab * n_bat + bat
    n_combo = n_lab * n_bat
    counts = da.map_blocks(lambda c: np.bincount(c, minlength=n_combo)[None, :], combo, new_axis=1,
                           chunks=((1,) * len(combo.chunks[0]), (n_combo,)), dtype=np.int64).sum(0)
    sums = cluster_distance_sums(x, combo, n_combo, metric=metric)
    sil = da.blockwise(_silhouettes_block, "iz", sums, "ik", lab, "i", bat, "i", counts, "k",
                       new_axes={"z": 3}, concatenate=True, dtype=np.float64, meta=np.empty((0, 0), np.float64),
                       n_batch=n_bat, scib=convention == "scib" and batch is not None)

    names, values = [], []
    s_lab = sil[:, 0]
    asw_label = s_lab.mean()
    names.append("asw_label")
    values.append((asw_label + 1) / 2 if convention == "scib" else asw_label)
    if batch:
        names.append("asw_batch")
        if convention == "scib":
            s_scib = sil[:, 2]
            per_label = da.map_blocks(
                lambda s, c: np.stack([np.bincount(c[~np.isnan(s)], s[~np.isnan(s)], minlength=n_lab),
                                       np.bincount(c[~np.isnan(s)], minlength=n_lab)])[None],
                s_scib, lab, new_axis=[1, 2], chunks=((1,) * len(lab.chunks[0]), (2,), (n_lab,)),
                dtype=np.float64).sum(0)
            values.append(_lazy_mean_of_means(per_label))
        else:
            values.append(sil[:, 1].mean())
    dbch_l = davies_bouldin_calinski(x, lab, n_lab)
    names += ["davies_bouldin_label", "calinski_harabasz_label"]
    values += [dbch_l[0], dbch_l[1]]
    if batch:
        dbch_b = davies_bouldin_calinski(x, bat, n_bat)
        names += ["davies_bouldin_batch", "calinski_harabasz_batch"]
        values += [dbch_b[0], dbch_b[1]]
    score = da.stack([da.asarray(v, dtype=np.float64).reshape(()) for v in values])

    # per-class mean silhouette (label as clusters)
    cls = da.map_blocks(lambda s, c: np.stack([np.bincount(c, s, minlength=n_lab), np.bincount(c, minlength=n_lab)])[None],
                        s_lab, lab, new_axis=[1, 2], chunks=((1,) * len(lab.chunks[0]), (2,), (n_lab,)),
                        dtype=np.float64).sum(0)
    per_class = cls[0] / da.maximum(cls[1], 1)

    # per-item values back on the item axis (NaN outside the sample)
    index = da.arange(n, chunks=da.asarray(arr.data).chunks[0], dtype=np.int64)
    rows_d = dask.delayed(rows, pure=True, traverse=False)

    def _on_items(v: da.Array) -> da.Array:
        if m == n:
            return v.rechunk((index.chunks[0],))
        vals = dask.delayed(np.asarray, pure=True)(v)
        return da.blockwise(_scatter_block, "i", index, "i", dtype=np.float64, meta=np.empty((0,), np.float64),
                            values=vals, rows=rows_d)

    sampled = da.blockwise(lambda i, rows: np.isin(i, rows), "i", index, "i", dtype=bool,
                           meta=np.empty((0,), bool), rows=rows_d)
    data = {
        "score_value": ((METRIC,), score),
        "score_silhouette_label": ((ITEM,), _on_items(s_lab)),
        "score_silhouette_class": ((CLASS,), per_class),
        "score_sampled": ((ITEM,), sampled),
    }
    if batch:
        data["score_silhouette_batch"] = ((ITEM,), _on_items(sil[:, 1]))
    if finite is not None:
        data = {k: (dims, after_check(v, finite)) for k, (dims, v) in data.items()}
    item_coords = {k: v for k, v in arr.coords.items() if v.dims == (ITEM,)}
    out = xr.Dataset(data, coords={**item_coords, METRIC: names, CLASS: lab_classes.astype(str)})
    out.attrs.update(convention=convention, metric=metric, sample_size=int(m), seed=int(seed), label=label,
                     batch=batch or "", vector=vector)
    validate(out)
    return out


def _mean_of_means(per_label: np.ndarray) -> np.ndarray:
    sums, counts = per_label
    keep = counts > 0
    if not keep.any():
        return np.array(np.nan)
    return np.array((sums[keep] / counts[keep]).mean())


def _lazy_mean_of_means(per_label: da.Array) -> da.Array:
    return da.from_delayed(dask.delayed(_mean_of_means, pure=True)(per_label), shape=(), dtype=np.float64)


# --- across folds ---------------------------------------------------------------------------------

def summarize_folds(table: pd.DataFrame, *, fold: str = "fold", metric: str = "metric", value: str = "value",
                    batch_metric: str = "asw_batch", confidence: float = 0.95) -> tuple[pd.DataFrame, dict]:
    """Summarise a tidy table of scores (one row per fold and metric) across folds.

    Returns ``(summary, extremes)``: ``summary`` has one row per metric with ``n``, ``mean``,
    ``sd`` (ddof 1), ``sem`` (sd / sqrt(n)), ``ci_low``, ``ci_high`` (two-sided Student t interval
    at ``confidence``, n - 1 degrees of freedom; NaN when n < 2); ``extremes`` names the folds with
    the lowest and highest ``batch_metric`` (``{}`` when that metric is absent).

    Parameters
    ----------
    table : DataFrame
        One row per fold and metric.
    fold, metric, value : str
        The columns naming the fold, the metric and its value.
    batch_metric : str
        The metric whose extreme folds are named.
    confidence : float
        The confidence level of the interval.

    Returns
    -------
    summary : DataFrame
        Columns ``metric``, ``n``, ``mean``, ``sd``, ``sem``, ``ci_low``, ``ci_high``.
    extremes : dict
        ``metric``, ``lowest_fold``, ``lowest``, ``highest_fold``, ``highest``.

    Examples
    --------
    >>> import pandas as pd
    >>> import interpretome as it
    >>> table = pd.DataFrame({"fold": [0, 0, 1, 1, 2, 2], "metric": ["asw_batch", "nmi"] * 3,
    ...                       "value": [0.1, 0.5, 0.2, 0.6, 0.3, 0.7]})
    >>> summary, extremes = it.summarize_folds(table)
    >>> summary[["metric", "n", "mean", "sd", "ci_low"]].round(3).values.tolist()
    [['asw_batch', 3, 0.2, 0.1, -0.048], ['nmi', 3, 0.6, 0.1, 0.352]]
    >>> int(extremes["lowest_fold"]), int(extremes["highest_fold"])
    (0, 2)
    """
    from scipy import stats

    missing = [c for c in (fold, metric, value) if c not in table.columns]
    if missing:
        raise ValueError(f"score table has no columns {missing}; it has {list(table.columns)}")
    rows = []
    for name, g in table.groupby(metric, sort=False):
        v = g[value].to_numpy(dtype=float)
        v = v[~np.isnan(v)]
        k = v.size
        mean = float(v.mean()) if k else np.nan
        sd = float(v.std(ddof=1)) if k > 1 else np.nan
        sem = sd / np.sqrt(k) if k > 1 else np.nan
        half = float(stats.t.ppf(0.5 + confidence / 2, k - 1) * sem) if k > 1 else np.nan
        rows.append({"metric": name, "n": k, "mean": mean, "sd": sd, "sem": sem,
                     "ci_low": mean - half, "ci_high": mean + half})
    summary = pd.DataFrame(rows)
    extremes: dict = {}
    b = table[table[metric] == batch_metric].dropna(subset=[value])
    if len(b):
        lo = b.loc[b[value].idxmin()]
        hi = b.loc[b[value].idxmax()]
        extremes = {"metric": batch_metric, "lowest_fold": lo[fold], "lowest": float(lo[value]),
                    "highest_fold": hi[fold], "highest": float(hi[value])}
    return summary, extremes


def fold_table(results: dict[str, xr.Dataset]) -> pd.DataFrame:
    """Return the tidy table (fold, metric, value) of computed ``clustering_scores`` results per fold."""
    rows = []
    for name, res in results.items():
        for m, v in zip(res[METRIC].values, np.asarray(res["score_value"].values)):
            rows.append({"fold": name, "metric": str(m), "value": float(v)})
    return pd.DataFrame(rows)


def fold_dataset(table: pd.DataFrame) -> xr.Dataset:
    """Return ``score_fold`` (fold, metric) from a tidy (fold, metric, value) table."""
    wide = table.pivot(index="fold", columns="metric", values="value")
    ds = xr.Dataset({"score_fold": ((FOLD, METRIC), wide.to_numpy(dtype=float))},
                    coords={FOLD: wide.index.astype(str).to_numpy(), METRIC: wide.columns.astype(str).to_numpy()})
    return validate(ds)
