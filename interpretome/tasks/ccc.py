"""Distributed all-pairs Clustermatch Correlation Coefficient (CCC) of a (feature, sample) matrix.

CCC (Pividori et al., the ``ccc-coef`` package) splits each feature into quantile partitions with
k = 2 .. min(10, round(sqrt(n_samples))) clusters and takes, for a pair of features, the largest
adjusted Rand index (ARI) between any partition of one and any partition of the other (at most
9 x 9 = 81 comparisons), floored at 0.

How it is computed here
-----------------------
1. **Partitions once per feature.** One task per feature block calls ccc-coef's own numba
   ``get_parts`` (so the labels are exactly ccc-coef's) and derives, per feature: the stable sort
   order of its values, the positions in that order where any of its partitions changes cluster
   (quantile clusters are contiguous runs of the sorted values: ties are never split), the sum of
   squared cluster sizes of every partition, and which partitions are valid.
2. **Tiles of pairs.** The (feature x feature) result is tiled by feature blocks; each upper
   tile (I <= J) is one task that receives the two prepared blocks, so a feature's partitions
   are computed once and reused by every pair; lower tiles are transposes of upper ones.
3. **Kernel** (``tasks.ccc_numba_fns``, apart from this graph code). For a pair (i, j) a numba
   kernel walks the samples in i's sorted order once, counting j's cluster labels of all
   partitions (K increments per sample, not K x K), and snapshots the counts at i's cluster boundaries. The contingency table of partition a of i
   against partition b of j is a difference of two snapshots, which gives sum(n_cl^2); the ARI
   is then ccc-coef's formula (its ``get_pair_confusion_matrix`` + ``adjusted_rand_index``)
   evaluated in int64 — exact, hence bit-identical, while n_samples <= 60,000 (every integer
   involved stays below 2^63); above that the same formula runs in float64.

Conventions follow ccc-coef: a feature whose k = 2 partition has a single cluster (a constant
feature) gives NaN against every feature; partitions with a single cluster compare as ARI 0.
NaN values are not supported by ccc-coef: a feature with NaN (or all-NaN) is an error naming it.

P-values (optional, ``n_perms``): for every pair, ``(#{ccc(x_i, x_j[perm]) >= ccc(x_i, x_j)} + 1)
/ (n_perms + 1)`` — ccc-coef's formula — with permutations of the samples drawn by the counter-
based generator (``engine.rng``) from ``seed``, shared by all pairs, so the p-values are
reproducible and independent of tiling and worker count (ccc-coef draws unseeded ones).
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import xarray as xr

from ..engine import rng
from ..engine.blocks import merge_result, require_vars
from ..storage.schema import FEATURE, FEATURE_I, FEATURE_J, PAIR, SAMPLE, validate
from .ccc_numba_fns import tile_kernel

EXACT_MAX_SAMPLES = 60_000
"""Up to this many samples the ARI is computed in exact int64 arithmetic (bit-identical to ccc-coef)."""


# --- partitions ---------------------------------------------------------------------------------

def range_n_clusters(n_samples: int, internal_n_clusters=None) -> np.ndarray:
    """Return ccc-coef's k values for ``n_samples`` (uint16, e.g. 2..10 for 100+ samples).

    ``internal_n_clusters``: None (default range), an int (max k) or a list of k values, as in
    ``ccc.coef.ccc``. Raises ``ValueError`` when no k fits (too few samples).
    """
    from ccc.coef import get_range_n_clusters
    from numba.typed import List

    ks = None
    if internal_n_clusters is not None:
        vals = (range(2, int(internal_n_clusters) + 1) if isinstance(internal_n_clusters, (int, np.integer))
                else [int(k) for k in internal_n_clusters])
        ks = List()
        for k in vals:
            ks.append(k)
        if len(ks) == 0:
            raise ValueError("internal_n_clusters is empty: pass None, a max k >= 2 or a list of k values")
    out = np.asarray(get_range_n_clusters(int(n_samples), ks))
    if out.shape[0] == 0:
        raise ValueError(
            f"{n_samples} samples are too few for CCC with internal_n_clusters={internal_n_clusters!r} "
            f"(it needs at least one k with 1 < k < n_samples): pass more samples (>= 3)")
    return out


def check_values(x: np.ndarray, names=None, offset: int = 0) -> None:
    """Raise ``ValueError`` naming the first feature (row of ``x`` (F, N)) holding NaN or inf."""
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        r = int(rows[0])
        name = str(names[r]) if names is not None else r + offset
        what = "is all-NaN (empty)" if np.isnan(x[r]).all() else f"has {int(bad[r].sum())} NaN/inf values"
        raise ValueError(
            f"feature {name!r} {what} and ccc-coef does not support NaN ({len(rows)} such feature(s) "
            f"in this block): drop those features or impute their missing values before computing CCC")


def prepare(x: np.ndarray, ks: np.ndarray, names=None, offset: int = 0) -> dict:
    """Return the per-feature partition data the pair kernel needs, for ``x`` (F, N).

    Keys: ``labels`` (F, N, K) int16 cluster labels (invalid partitions set to 0), ``order``
    (F, N) int32 stable sort order, ``bounds`` (F, M) int32 union of cluster boundaries in that
    order (padded with -1, starts with 0 and ends with N), ``seg`` (F, K, S) int32 index into
    ``bounds`` of each partition's boundaries (padded -1), ``nseg`` (F, K) int32, ``sq`` (F, K)
    int64 sum of squared cluster sizes, ``valid`` (F, K) bool, ``ok`` (F,) bool (False: constant
    feature -> NaN), ``nlab`` (F, K) int32 = max label + 1. Labels come from ccc-coef's
    ``get_parts``, so they equal ccc-coef's partitions exactly.
    """
    from ccc.coef import get_parts

    x = np.asarray(x, dtype=np.float64)
    check_values(x, names, offset)
    f, n = x.shape
    k = len(ks)
    labels = np.zeros((f, n, k), np.int16)
    order = np.empty((f, n), np.int32)
    seg_max = int(ks.max()) + 1
    bounds = np.full((f, int(ks.sum()) + 2), -1, np.int32)
    seg = np.full((f, k, seg_max), -1, np.int32)
    nseg = np.zeros((f, k), np.int32)
    sq = np.zeros((f, k), np.int64)
    valid = np.zeros((f, k), bool)
    nlab = np.ones((f, k), np.int32)
    ok = np.zeros(f, bool)
    for r in range(f):
        parts = np.asarray(get_parts(x[r], ks, True))  # (K, N) int16, -2 rows = single cluster
        ok[r] = parts[0, 0] != -2
        o = np.argsort(x[r], kind="stable").astype(np.int32)
        order[r] = o
        cuts = {0, n}
        per = []
        for a in range(k):
            p = parts[a]
            if p[0] < 0:
                per.append(None)
                continue
            valid[r, a] = True
            labels[r, :, a] = p
            nlab[r, a] = int(p.max()) + 1
            ps = p[o]
            if np.any(np.diff(ps) < 0):  # quantile clusters are runs of the sorted values
                raise RuntimeError(f"ccc-coef partition k={int(ks[a])} is not monotone in the sort order")
            c = np.flatnonzero(np.diff(ps)) + 1
            per.append(c)
            cuts.update(c.tolist())
            sq[r, a] = int((np.bincount(p).astype(np.int64) ** 2).sum())
        u = np.array(sorted(cuts), np.int32)
        bounds[r, :len(u)] = u
        for a in range(k):
            if per[a] is None:
                continue
            b = np.concatenate(([0], per[a], [n]))
            idx = np.searchsorted(u, b).astype(np.int32)
            seg[r, a, :len(idx)] = idx
            nseg[r, a] = len(idx)
    return {"labels": labels, "order": order, "bounds": bounds, "seg": seg, "nseg": nseg, "sq": sq,
            "valid": valid, "ok": ok, "nlab": nlab, "n": n}


# --- tiles of pairs (kernels in ccc_numba_fns) ---------------------------------------------------

def tile(pi: dict, pj: dict, diag: bool, perms: np.ndarray) -> np.ndarray:
    """Return ``(2, Fi, Fj)`` float64 [ccc, p-value] for prepared blocks ``pi`` x ``pj``.

    ``perms`` (P, N) int64 sample permutations (P may be 0: p-values are NaN). With ``diag``
    the two blocks are the same: the upper triangle is computed, mirrored, and the diagonal is
    1 (NaN for constant features; p-value NaN).
    """
    exact = pi["n"] <= EXACT_MAX_SAMPLES
    raw = tile_kernel(pi["order"], pi["bounds"], pi["seg"], pi["nseg"], pi["sq"], pi["valid"], pi["ok"],
                       pj["labels"], pj["sq"], pj["valid"], pj["ok"], pj["nlab"], bool(diag),
                       np.ascontiguousarray(perms, dtype=np.int64), exact)
    val = raw[0]
    if perms.shape[0]:
        pv = (raw[1] + 1.0) / (perms.shape[0] + 1.0)  # NaN where the CCC is NaN
    else:
        pv = np.full_like(val, np.nan)
    if diag:
        iu = np.triu_indices(val.shape[0], 1)
        val.T[iu] = val[iu]
        pv.T[iu] = pv[iu]
        np.fill_diagonal(val, np.where(pi["ok"], 1.0, np.nan))
        np.fill_diagonal(pv, np.nan)
    return np.stack([val, pv])


def permutations(n_samples: int, n_perms: int, seed: int) -> np.ndarray:
    """Return ``(n_perms, n_samples)`` int64 permutations drawn by key (seed, permutation, sample)."""
    if n_perms <= 0:
        return np.zeros((0, n_samples), np.int64)
    h = rng.hash_keys(int(seed), np.arange(n_perms, dtype=np.int64)[:, None],
                      np.arange(n_samples, dtype=np.int64)[None, :])
    return np.argsort(h, axis=1, kind="stable").astype(np.int64)


def ccc_values(x: np.ndarray, y: np.ndarray, *, n_perms: int = 0, seed: int = 0,
               internal_n_clusters=None) -> tuple[float, float]:
    """Return (ccc, p-value) of two 1-d numeric vectors (p-value NaN when ``n_perms`` is 0).

    Equal to ``ccc.coef.ccc(x, y)``; the p-value permutes ``y`` with the seeded permutations of
    ``permutations(len(y), n_perms, seed)``. Raises ``ValueError`` for NaN values or length mismatch.
    """
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y have different lengths ({x.size} vs {y.size}): pass vectors over the same samples")
    ks = range_n_clusters(x.size, internal_n_clusters)
    pre = prepare(np.stack([x, y]), ks, names=["x", "y"])
    out = tile(pre, pre, True, permutations(x.size, n_perms, seed))
    return float(out[0, 0, 1]), float(out[1, 0, 1])


# --- the task -----------------------------------------------------------------------------------

def _prepare_block(block, ks, names, offset):
    return prepare(block, ks, names=names, offset=offset)


def _tile_task(pi, pj, diag, perms, with_p):
    out = tile(pi, pj, diag, perms)
    return out if with_p else out[0]


def _transpose_tile(t):
    return np.ascontiguousarray(np.swapaxes(t, -1, -2))


def _condense_tiles(tiles, r0, n_features):
    """Return the condensed entries (j > i) of rows ``r0 ..`` from the row-block's tiles (I, J >= I)."""
    row = np.concatenate(tiles, axis=-1)  # (..., rows, n_features - r0)
    parts = [row[..., r, r + 1:] for r in range(row.shape[-2])]
    return np.concatenate(parts, axis=-1) if parts else row[..., 0, :0]


def _ccc_graph(x: da.Array, ks, perms, names, form: str) -> da.Array:
    """Return the lazy result: square ``([2,] F, F)`` or condensed ``([2,] P)``; the leading 2 = [ccc, p-value]
    is there only with permutations.

    Graph: one partition task per feature block (``x``'s chunks), one kernel task per upper tile
    (I <= J) that receives the two prepared blocks, then either the lower tiles as transposes
    (square; chunks = tiles) or one task per row block cutting out its condensed entries.
    """
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    x = x.rechunk({1: -1})
    sizes = tuple(int(c) for c in x.chunks[0])
    nb = len(sizes)
    f = int(sum(sizes))
    starts = np.concatenate(([0], np.cumsum(sizes))).astype(int)
    with_p = perms.shape[0] > 0
    tok = tokenize(x.name, [int(k) for k in ks], perms, list(map(str, names)), form)
    prep, tname, pname, out = f"ccc-partitions-{tok}", f"ccc-tile-{tok}", f"ccc-perms-{tok}", f"ccc-{form}-{tok}"
    dsk: dict = {(pname,): perms}
    for b in range(nb):
        dsk[(prep, b)] = (_prepare_block, (x.name, b, 0), ks, list(names[starts[b]:starts[b + 1]]), int(starts[b]))
    for a in range(nb):
        for b in range(a, nb):
            dsk[(tname, a, b)] = (_tile_task, (prep, a), (prep, b), a == b, (pname,), with_p)
    lead = (0,) if with_p else ()
    if form == "square":
        for a in range(nb):
            for b in range(nb):
                dsk[(out, *lead, a, b)] = (tname, a, b) if a <= b else (_transpose_tile, (tname, b, a))
        chunks = ((2,),) * with_p + (sizes, sizes)
        shape_meta = np.empty((0,) * (2 + with_p), np.float64)
    else:
        pair_sizes = []
        for a in range(nb):
            dsk[(out, *lead, a)] = (_condense_tiles, [(tname, a, b) for b in range(a, nb)], int(starts[a]), f)
            pair_sizes.append(int(sum(f - 1 - r for r in range(starts[a], starts[a + 1]))))
        chunks = ((2,),) * with_p + (tuple(pair_sizes),)
        shape_meta = np.empty((0,) * (1 + with_p), np.float64)
    graph = HighLevelGraph.from_collections(out, dsk, dependencies=[x])
    return da.Array(graph, out, chunks=chunks, dtype=np.float64, meta=shape_meta)


def condensed_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (i, j) int64 indices of the condensed order (i < j, row by row) for ``n`` features."""
    return np.triu_indices(n, 1)


def all_pairs_ccc(
    ds: xr.Dataset,
    *,
    var: str = "feature_value",
    form: str = "square",
    feature_chunk: int | None = None,
    n_perms: int = 0,
    seed: int = 0,
    internal_n_clusters=None,
    merge: bool = False,
) -> xr.Dataset:
    """Return the lazy all-pairs CCC of the rows of ``ds[var]`` (feature, sample).

    ``form="square"``: ``ccc_matrix`` (feature_i, feature_j) [and ``ccc_matrix_pvalue``], with
    coordinates feature_i/feature_j = the feature names. ``form="condensed"``: ``ccc_pair``
    (pair,) [and ``ccc_pair_pvalue``] in ccc-coef's order (i < j, row by row), with coordinates
    feature_i/feature_j (pair,) naming each pair. ``feature_chunk`` features per tile side
    (default: 8 blocks a side, at least 32 features: ~36 kernel tasks); ``n_perms`` > 0 adds permutation
    p-values with seeded permutations; ``internal_n_clusters`` as in ccc-coef. Values equal
    ``ccc.coef.ccc(X)``. Nothing is computed; a NaN in dask-backed input raises at compute time
    (in numpy-backed input, here).

    Parameters
    ----------
    ds : Dataset
        Holds ``var`` (feature, sample).
    var : str
        The variable whose rows are compared.
    form : {'square', 'condensed'}
        The output layout.
    feature_chunk : int, optional
        Features per tile side.
    n_perms : int
        Permutations for p-values (0: none).
    seed : int
        Seed of the permutations.
    internal_n_clusters : int or sequence of int, optional
        As in ccc-coef.
    merge : bool
        Return the input's variables too.

    Returns
    -------
    Dataset
        ``ccc_matrix`` (feature_i, feature_j) or ``ccc_pair`` (pair,) float64 [and the p-values].
        Lazy.

    Examples
    --------
    >>> import numpy as np
    >>> import xarray as xr
    >>> import interpretome as it
    >>> x = np.random.default_rng(0).normal(size=(3, 50))
    >>> x[1] = x[0] ** 2
    >>> ds = xr.Dataset({"feature_value": (("feature", "sample"), x)}, coords={"feature": ["a", "b", "c"]})
    >>> m = it.all_pairs_ccc(ds).compute()["ccc_matrix"]
    >>> m.dims, bool((m.values.diagonal() == 1).all())
    (('feature_i', 'feature_j'), True)
    >>> bool(m.sel(feature_i="a", feature_j="b") > 5 * m.sel(feature_i="a", feature_j="c"))
    True
    >>> it.all_pairs_ccc(ds, form="condensed")["ccc_pair"].shape
    (3,)
    """
    require_vars(ds, (var,), "a Dataset with a (feature, sample) variable, e.g. xr.Dataset({'feature_value': "
                             "(('feature', 'sample'), X)})")
    arr = ds[var]
    if arr.ndim != 2 or arr.dims[0] != FEATURE or arr.dims[1] != SAMPLE:
        raise ValueError(f"{var!r} has dims {arr.dims}; CCC needs ('feature', 'sample'): transpose or rename it "
                         f"(e.g. ds.transpose('feature', 'sample'))")
    if np.dtype(arr.dtype).kind not in "fiu":
        raise TypeError(f"{var!r} has dtype {arr.dtype}; CCC here needs numeric values (encode categories first)")
    if form not in ("square", "condensed"):
        raise ValueError(f"form {form!r} is not 'square' or 'condensed'")
    n_feat, n_samp = arr.shape
    if n_feat < 2:
        raise ValueError(f"{var!r} has {n_feat} feature(s); all-pairs CCC needs at least 2")
    if n_samp == 0:
        raise ValueError(f"{var!r} has no samples (empty sample dim): pass a matrix with samples")
    ks = range_n_clusters(n_samp, internal_n_clusters)
    names = (np.asarray(ds[FEATURE].values) if FEATURE in ds.coords else np.arange(n_feat))
    data = arr.data
    if not isinstance(data, da.Array):
        check_values(np.asarray(data, dtype=np.float64), names)
        data = da.from_array(np.asarray(data), chunks=(n_feat, n_samp))
    fc = int(feature_chunk) if feature_chunk else max(32, math.ceil(n_feat / 8))
    if fc < 1:
        raise ValueError(f"feature_chunk must be >= 1, got {feature_chunk}")
    data = data.rechunk((fc, -1))
    n_perms = int(n_perms)
    if n_perms < 0:
        raise ValueError(f"n_perms must be >= 0, got {n_perms}")
    perms = permutations(n_samp, n_perms, seed)
    res = _ccc_graph(data, ks, perms, names, form)
    val, pval = (res[0], res[1]) if n_perms else (res, None)
    attrs = {"ccc_n_perms": n_perms, "ccc_seed": int(seed), "ccc_k": [int(k) for k in ks],
             "ccc_library": "interpretome numba kernel over ccc-coef partitions"}
    if form == "square":
        new = xr.Dataset({"ccc_matrix": ((FEATURE_I, FEATURE_J), val)},
                         coords={FEATURE_I: names, FEATURE_J: names}, attrs=attrs)
        if n_perms:
            new["ccc_matrix_pvalue"] = ((FEATURE_I, FEATURE_J), pval)
    else:
        ii, jj = condensed_pairs(n_feat)
        new = xr.Dataset({"ccc_pair": ((PAIR,), val)},
                         coords={PAIR: np.arange(ii.size), FEATURE_I: (PAIR, names[ii]),
                                 FEATURE_J: (PAIR, names[jj])}, attrs=attrs)
        if n_perms:
            new["ccc_pair_pvalue"] = ((PAIR,), pval)
    validate(new)
    return merge_result(ds, new, merge)


def ccc_dataset(x, features=None, samples=None, chunks=None) -> xr.Dataset:
    """Return ``xr.Dataset({'feature_value': (feature, sample)})`` from an array-like (F, N)."""
    x = x if isinstance(x, da.Array) else np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"the matrix must be 2-d (feature, sample), got shape {x.shape}")
    if chunks is not None:
        x = da.asarray(x).rechunk(chunks)
    coords = {FEATURE: np.asarray(features) if features is not None else np.array([f"f{i}" for i in range(x.shape[0])])}
    if samples is not None:
        coords[SAMPLE] = np.asarray(samples)
    return xr.Dataset({"feature_value": ((FEATURE, SAMPLE), x)}, coords=coords)
