"""Multi-class vs one-vs-rest coefficients: per-class Pearson, Spearman and CCC over features.

For every (model name, feature set) that has both a ``multiclass`` and an ``ovr`` entry in
``coefficient`` (model, class, feature), and for every class, the multi-class model's row and the
class's binary model's row are compared over the features: Pearson r (``scipy.stats.pearsonr``,
two-sided p-value), Spearman rho (``scipy.stats.spearmanr``, two-sided p-value) and the
Clustermatch Correlation Coefficient (the kernel of ``tasks.ccc``, equal to ``ccc.coef.ccc``;
permutation p-value with ``n_perms`` seeded permutations). CCC ignores the sign of an
association, so Pearson/Spearman sit beside it.

Output: ``coefficient_correlation`` (comparison, class, metric) and
``coefficient_correlation_pvalue`` (same dims), metric = pearson, spearman, ccc; a comparison is
named ``model_name:feature_set`` with ``model_name`` and ``feature_set`` coordinates. Classes a
comparison lacks are NaN. ``correlation_table`` gives the tidy table.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from ..engine.blocks import merge_result, require_vars
from ..storage.schema import CLASS, COMPARISON, FEATURE, METRIC, MODEL, require, validate
from .ccc import ccc_values

METRICS = ("pearson", "spearman", "ccc")


def correlations(x: np.ndarray, y: np.ndarray, *, n_perms: int = 0, seed: int = 0) -> np.ndarray:
    """Return ``(2, 3)`` float64: [values, p-values] x [pearson, spearman, ccc] of two vectors.

    NaN when a vector is constant (Pearson/Spearman undefined; CCC NaN as in ccc-coef).
    """
    from scipy import stats

    out = np.full((2, 3), np.nan)
    const = np.ptp(x) == 0 or np.ptp(y) == 0
    if not const:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pr = stats.pearsonr(x, y)
            sr = stats.spearmanr(x, y)
        out[:, 0] = pr.statistic, pr.pvalue
        out[:, 1] = sr.statistic, sr.pvalue
    if x.size >= 3:
        out[0, 2], out[1, 2] = ccc_values(x, y, n_perms=n_perms, seed=seed)
    return out


def _compare_block(pair: np.ndarray, *, classes_ok: np.ndarray, n_perms: int, seed: int) -> np.ndarray:
    """Return ``(1, C, 3, 2)`` for ``pair`` (2, C, F): per class the correlations of the two rows."""
    c = pair.shape[1]
    out = np.full((1, c, 3, 2), np.nan)
    for k in range(c):
        if classes_ok[k]:
            r = correlations(np.asarray(pair[0, k], np.float64), np.asarray(pair[1, k], np.float64),
                             n_perms=n_perms, seed=seed)
            out[0, k] = r.T
    return out


def comparison_pairs(ds: xr.Dataset, multiclass: str = "multiclass", binary: str = "ovr") -> list[dict]:
    """Return the (multi-class, binary) entry pairs of ``ds``, checked for matching classes and features.

    Each item: ``{"name", "model_name", "feature_set", "multi", "binary", "classes" (bool over
    class), "features" (bool over feature)}``. Reads coordinates only (no compute). Raises
    ``ValueError`` when an entry has no partner or when the two entries' classes or features differ.
    """
    names = ds["model_name"].values
    sets = ds["feature_set"].values
    kinds = ds["model_kind"].values
    groups: dict[tuple[str, str], dict[str, int]] = {}
    for m in range(ds.sizes[MODEL]):
        key = (str(names[m]), str(sets[m]))
        if str(kinds[m]) in groups.setdefault(key, {}):
            raise ValueError(f"model {names[m]!r} feature set {sets[m]!r} has two {kinds[m]!r} entries: keep one")
        groups[key][str(kinds[m])] = m
    pairs = []
    cls = ds[CLASS].values
    feat = ds[FEATURE].values
    for (name, fset), g in groups.items():
        if multiclass not in g or binary not in g:
            have = sorted(g)
            raise ValueError(
                f"model {name!r} feature set {fset!r} has only {have} coefficients: a comparison needs both a "
                f"{multiclass!r} and a {binary!r} entry (add the missing one or drop this model)")
        a, b = g[multiclass], g[binary]
        ca, cb = ds["class_present"].values[a], ds["class_present"].values[b]
        fa, fb = ds["feature_present"].values[a], ds["feature_present"].values[b]
        if not np.array_equal(ca, cb):
            only_a, only_b = list(cls[ca & ~cb][:5]), list(cls[cb & ~ca][:5])
            raise ValueError(
                f"the classes of model {name!r} feature set {fset!r} do not match: {only_a} only in the "
                f"{multiclass} model, {only_b} only in the {binary} models: give a binary model for every class "
                f"of the multi-class model (and no other)")
        if not np.array_equal(fa, fb):
            only_a, only_b = list(feat[fa & ~fb][:5]), list(feat[fb & ~fa][:5])
            raise ValueError(
                f"the features of model {name!r} feature set {fset!r} do not match: {only_a} only in the "
                f"{multiclass} model, {only_b} only in the {binary} models: fit both on the same feature set")
        pairs.append({"name": f"{name}:{fset}", "model_name": name, "feature_set": fset, "multi": a,
                      "binary": b, "classes": ca, "features": fa})
    if not pairs:
        raise ValueError("no model entries to compare: pass multi-class and one-vs-rest coefficients")
    return pairs


def compare_coefficients(ds: xr.Dataset, *, n_perms: int = 0, seed: int = 0, multiclass: str = "multiclass",
                         binary: str = "ovr", var: str = "coefficient", merge: bool = True) -> xr.Dataset:
    """Return the lazy per-class multi-class vs one-vs-rest correlations (see the module doc).

    Input: ``ds[var]`` (a ``coefficient``: (model, class, feature)) with ``model_name``, ``feature_set``,
    ``model_kind``, ``class_present`` and ``feature_present`` coordinates (``storage.coef_io``).
    Output: ``coefficient_correlation`` and ``coefficient_correlation_pvalue`` (comparison, class,
    metric). One task per comparison; nothing is computed.

    Parameters
    ----------
    ds : Dataset
        Coefficients (``read_coefficients`` / ``combine_coefficients``).
    n_perms : int
        Seeded permutations for the CCC p-value (0: NaN); Pearson / Spearman p-values are scipy's
        two-sided ones.
    seed : int
        Seed of the permutations.
    multiclass, binary : str
        The ``model_kind`` of the multi-class and of the one-vs-rest entries.
    var : str
        The coefficient variable.
    merge : bool
        Return the input's variables too.

    Returns
    -------
    Dataset
        ``coefficient_correlation`` and ``coefficient_correlation_pvalue`` (comparison, class,
        metric), ``metric`` = pearson, spearman, ccc. Lazy.

    Examples
    --------
    >>> import numpy as np
    >>> import interpretome as it
    >>> names = dict(features=["g1", "g2", "g3"])
    >>> ds = it.combine_coefficients([
    ...     it.read_coefficients(np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 2.0]]), classes=["B", "T"], **names),
    ...     it.read_coefficients(np.array([[2.0, -3.0, 1.0]]), kind="ovr", classes=["B"], **names),
    ...     it.read_coefficients(np.array([[0.5, 1.0, 3.0]]), kind="ovr", classes=["T"], **names)])
    >>> res = it.compare_coefficients(ds, binary="ovr").compute()
    >>> res["coefficient_correlation"].dims, res["metric"].values.tolist()
    (('comparison', 'class', 'metric'), ['pearson', 'spearman', 'ccc'])
    >>> res["coefficient_correlation"].sel(metric="spearman").values.tolist()
    [[1.0, 1.0]]
    """
    producer = "interpretome.storage.coef_io.read_coefficients / combine_coefficients"
    require_vars(ds, (var, "model_name", "feature_set", "model_kind", "class_present", "feature_present"), producer)
    require(ds, var, "coefficient", producer)
    n_perms = int(n_perms)
    if n_perms < 0:
        raise ValueError(f"n_perms must be >= 0, got {n_perms}")
    pairs = comparison_pairs(ds, multiclass, binary)
    coef = ds[var].data
    coef = coef if isinstance(coef, da.Array) else da.from_array(np.asarray(coef), chunks=-1)
    n_cls = ds.sizes[CLASS]
    blocks = []
    for p in pairs:
        fidx = np.flatnonzero(p["features"])
        pair = da.stack([coef[p["multi"]], coef[p["binary"]]])[:, :, fidx].rechunk(-1)
        blocks.append(da.map_blocks(_compare_block, pair, classes_ok=p["classes"], n_perms=n_perms, seed=int(seed),
                                    chunks=((1,), (n_cls,), (3,), (2,)), new_axis=3, dtype=np.float64,
                                    meta=np.empty((0, 0, 0, 0), np.float64)))
    out = da.concatenate(blocks, axis=0)
    dims = (COMPARISON, CLASS, METRIC)
    new = xr.Dataset(
        {"coefficient_correlation": (dims, out[..., 0]), "coefficient_correlation_pvalue": (dims, out[..., 1])},
        coords={COMPARISON: [p["name"] for p in pairs], CLASS: ds[CLASS].values, METRIC: list(METRICS),
                "comparison_model_name": (COMPARISON, np.array([p["model_name"] for p in pairs], dtype=object)),
                "comparison_feature_set": (COMPARISON, np.array([p["feature_set"] for p in pairs], dtype=object)),
                "comparison_class_present": ((COMPARISON, CLASS), np.stack([p["classes"] for p in pairs]))},
        attrs={"correlation_n_perms": n_perms, "correlation_seed": int(seed)})
    validate(new)
    return merge_result(ds, new, merge)


def correlation_table(ds: xr.Dataset, pvalues: bool = True) -> pd.DataFrame:
    """Return the tidy table: model, feature_set, class, pearson, spearman, ccc[, *_pvalue] (present classes).

    Parameters
    ----------
    ds : Dataset
        A ``compare_coefficients`` result (computed, or opened from a store).
    pvalues : bool
        Add the ``*_pvalue`` columns.

    Returns
    -------
    DataFrame
        One row per (comparison, present class).

    Examples
    --------
    >>> import numpy as np
    >>> import interpretome as it
    >>> names = dict(features=["g1", "g2", "g3"])
    >>> ds = it.combine_coefficients([
    ...     it.read_coefficients(np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 2.0]]), classes=["B", "T"], **names),
    ...     it.read_coefficients(np.array([[2.0, -3.0, 1.0]]), kind="ovr", classes=["B"], **names),
    ...     it.read_coefficients(np.array([[0.5, 1.0, 3.0]]), kind="ovr", classes=["T"], **names)])
    >>> table = it.correlation_table(it.compare_coefficients(ds, binary="ovr").compute(), pvalues=False)
    >>> table[["class", "pearson", "spearman"]].round(3).values.tolist()
    [['B', 0.999, 1.0], ['T', 0.945, 1.0]]
    """
    require_vars(ds, ("coefficient_correlation",), "compare_coefficients")
    val = np.asarray(ds["coefficient_correlation"].values)
    pv = np.asarray(ds["coefficient_correlation_pvalue"].values) if pvalues else None
    present = ds["comparison_class_present"].values
    rows = []
    for c in range(ds.sizes[COMPARISON]):
        for k, cls in enumerate(ds[CLASS].values):
            if not present[c, k]:
                continue
            row = {"model": str(ds["comparison_model_name"].values[c]),
                   "feature_set": str(ds["comparison_feature_set"].values[c]), "class": str(cls)}
            row.update({m: val[c, k, i] for i, m in enumerate(METRICS)})
            if pvalues:
                row.update({f"{m}_pvalue": pv[c, k, i] for i, m in enumerate(METRICS)})
            rows.append(row)
    return pd.DataFrame(rows)
