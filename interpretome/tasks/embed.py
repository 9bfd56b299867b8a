"""Embeddings: UMAP, t-SNE and PCA of item vectors, on CPU or GPU, fitted on a seeded subsample.

Input: ``item_vector`` (item, feature) float — k-mer embedding rows, cell latent spaces, patch
embeddings, flattened attributions (see ``interpretome.storage.embedding_io``).
Output: ``embedding_<method>`` (item, component) float32 and ``embedding_fitted`` (item,) bool.

How it runs (nothing is computed here; the graph is returned):

1. ``fit_size`` items are drawn with ``numpy.random.default_rng(seed)`` (all items when
   ``n <= fit_size``); their indices are sorted and stored as ``embedding_fitted``.
2. One task fits the reducer on those rows (umap-learn / openTSNE / scikit-learn on CPU,
   cuML on a GPU worker) and keeps the fitted coordinates.
3. The items are cut into fixed blocks of ``item_chunk`` rows (by global index, whatever the input
   chunking) and every block is placed in parallel on the workers: fitted rows take their fitted
   coordinates, the others go through the reducer's ``transform``. Results therefore do not
   depend on the input chunking or the number of workers.

numba (umap-learn, pynndescent) compiles on first use; compiled code is cached on disk under
``<cache_dir>/numba`` (``NUMBA_CACHE_DIR``) for every jitted function of umap and pynndescent,
including the functions umap jits at call time, so a second process does not recompile (the
cache and GPU detection are process tuning: ``engine.process``).

Backends: ``backend="cpu" | "gpu" | "auto"``; ``resolve_backend`` decides (``"auto"`` picks the
GPU when cuML and a CUDA device are present *on the worker that fits*). cuML's t-SNE has no
``transform``, so t-SNE on a subsample falls back to openTSNE when ``backend="auto"`` and is an
error with ``backend="gpu"``.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..engine.blocks import independent, merge_result, require_vars
from ..engine.process import gpu_available, numba_cache
from ..storage.embedding_io import check_finite_rows
from ..storage.schema import CLASS, COMPONENT, FEATURE, ITEM, validate

METHODS = ("umap", "tsne", "pca")
BACKENDS = ("auto", "cpu", "gpu")


# --- backends ------------------------------------------------------------------------------------

def resolve_backend(backend: str = "auto", method: str = "umap", subsample: bool = False) -> str:
    """Return ``"cpu"`` or ``"gpu"`` for ``backend`` (``auto``, ``cpu`` or ``gpu``).

    ``auto`` gives ``gpu`` when ``gpu_available()``, except for t-SNE on a subsample (cuML's t-SNE
    cannot transform new points), which stays on the CPU. Raises ``ValueError`` for an unknown
    backend and ``RuntimeError`` when ``gpu`` is asked for but unusable.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    if backend == "cpu":
        return "cpu"
    if backend == "gpu":
        if method == "tsne" and subsample:
            raise ValueError("cuML's t-SNE has no transform, so it cannot place items outside the fitted "
                             "subsample: raise fit_size to the number of items or use backend='cpu' (openTSNE)")
        if not gpu_available():
            raise RuntimeError("backend='gpu' needs cuML and a CUDA GPU on the worker: install the gpu extra "
                               "(pip install 'interpretome[gpu]') and run on GPU workers, or use backend='cpu'")
        return "gpu"
    if method == "tsne" and subsample:
        return "cpu"
    return "gpu" if gpu_available() else "cpu"


def make_reducer(method: str, backend: str, n_components: int, seed: int, params: dict | None = None):
    """Return an unfitted reducer for ``method`` on ``backend`` (``cpu`` or ``gpu``, already resolved).

    CPU: ``umap.UMAP``, ``openTSNE.TSNE``, ``sklearn.decomposition.PCA``; GPU: ``cuml.manifold.UMAP``,
    ``cuml.manifold.TSNE``, ``cuml.decomposition.PCA`` with ``output_type="numpy"``. ``params`` are
    passed on (e.g. ``n_neighbors``, ``min_dist``, ``metric``, ``perplexity``).
    """
    params = dict(params or {})
    if backend == "gpu":
        try:
            import cuml
        except ImportError as e:
            raise RuntimeError("the GPU reducers need cuML: pip install 'interpretome[gpu]'") from e
        if method == "umap":
            return cuml.manifold.UMAP(n_components=n_components, random_state=seed, output_type="numpy", **params)
        if method == "tsne":
            return cuml.manifold.TSNE(n_components=n_components, random_state=seed, output_type="numpy", **params)
        return cuml.decomposition.PCA(n_components=n_components, output_type="numpy", **params)
    if method == "umap":
        import umap

        params.setdefault("transform_seed", seed)
        return umap.UMAP(n_components=n_components, random_state=seed, **params)
    if method == "tsne":
        import openTSNE

        params.setdefault("n_jobs", 1)
        if n_components > 2:
            params.setdefault("negative_gradient_method", "bh")  # the FFT method is 1-D/2-D only
        return openTSNE.TSNE(n_components=n_components, random_state=seed, **params)
    from sklearn.decomposition import PCA

    return PCA(n_components=n_components, random_state=seed, **params)


# --- fit and transform ---------------------------------------------------------------------------

@dataclass
class Fitted:
    """A fitted reducer: its method and backend, the model, the fitted rows and their coordinates."""

    method: str
    backend: str
    model: Any
    index: np.ndarray          # (m,) int64, sorted global item indices of the fit rows
    embedding: np.ndarray      # (m, component) float32, their fitted coordinates
    info: dict = field(default_factory=dict)


def _jit_context(method: str, backend: str):
    """``numba_cache()`` for umap-learn on the CPU (the only numba user); a no-op context otherwise."""
    return numba_cache() if method == "umap" and backend == "cpu" else contextlib.nullcontext()


def _fit(x: np.ndarray, index: np.ndarray, *, method: str, backend: str, n_components: int, seed: int,
         params: dict, subsample: bool) -> Fitted:
    """Fit the reducer on rows ``x`` (m, feature) with global indices ``index``; return ``Fitted``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    check_finite_rows(x, index)
    resolved = resolve_backend(backend, method, subsample)
    model = make_reducer(method, resolved, n_components, seed, params)
    with _jit_context(method, resolved), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        if method == "tsne" and resolved == "cpu":
            model = model.fit(x)               # an openTSNE TSNEEmbedding (it transforms new points)
            emb = np.asarray(model)
        else:
            emb = np.asarray(model.fit_transform(x))
    return Fitted(method, resolved, model, np.asarray(index, np.int64), emb.astype(np.float32))


def _transform(fitted: Fitted, x: np.ndarray) -> np.ndarray:
    with _jit_context(fitted.method, fitted.backend), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        return np.asarray(fitted.model.transform(np.ascontiguousarray(x, dtype=np.float32)), np.float32)


def _place_block(x: np.ndarray, index: np.ndarray, fitted: Fitted) -> np.ndarray:
    """Return ``(b, component)`` float32 coordinates of one block of items ``x`` (b, feature)."""
    out = np.empty((x.shape[0], fitted.embedding.shape[1]), np.float32)
    pos = np.clip(np.searchsorted(fitted.index, index), 0, max(fitted.index.size - 1, 0))
    is_fit = fitted.index[pos] == index
    out[is_fit] = fitted.embedding[pos[is_fit]]
    rest = ~is_fit
    if rest.any():
        check_finite_rows(x[rest], index[rest])
        out[rest] = _transform(fitted, x[rest])
    return out


def fit_indices(n: int, fit_size: int | None, seed: int) -> np.ndarray:
    """Return the sorted int64 indices of the items a reducer is fitted on (all when n <= fit_size)."""
    if fit_size is None or fit_size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, int(fit_size), replace=False)).astype(np.int64)


def _isin_block(index: np.ndarray, fit_index: np.ndarray) -> np.ndarray:
    return np.isin(index, fit_index)


def embed(
    ds: xr.Dataset,
    *,
    method: str = "umap",
    n_components: int = 2,
    seed: int = 0,
    fit_size: int | None = 100_000,
    item_chunk: int = 10_000,
    backend: str = "auto",
    vector: str = "item_vector",
    merge: bool = True,
    **params,
) -> xr.Dataset:
    """Return the lazy ``method`` embedding of ``ds[vector]`` (item, feature).

    Output: ``embedding_<method>`` (item, component) float32 chunked by ``item_chunk`` items, with
    component coordinate ``<method>1 ..``, and ``embedding_fitted`` (item,) bool marking the
    ``fit_size`` items (seeded by ``seed``) the reducer was fitted on. ``params`` go to the
    reducer (``n_neighbors=15``, ``min_dist``, ``metric`` for UMAP; ``perplexity`` for t-SNE).
    Nothing is computed. Raises ``ValueError`` for an unknown method or backend, a vector that is
    not (item, feature), ``n_components`` larger than the features (or < 1), and — eagerly for
    numpy-backed input, at compute time otherwise — NaN rows.

    Parameters
    ----------
    ds : xarray.Dataset
        Holds ``ds[vector]`` (item, feature), e.g. from ``read_embedding_input``.
    method : {"umap", "tsne", "pca"}, default "umap"
        The reducer (umap-learn, openTSNE, scikit-learn; cuML with ``backend="gpu"``).
    n_components : int, default 2
        Output dimensions.
    seed : int, default 0
        Seed of the fitted subsample and of the reducer.
    fit_size : int or None, default 100000
        Items the reducer is fitted on (None: all); the others go through ``transform``.
    item_chunk : int, default 10000
        Items per output chunk (one task each).
    backend : {"auto", "cpu", "gpu"}, default "auto"
    vector : str, default "item_vector"
    merge : bool, default True
        Return the input variables too.
    **params
        Reducer options (``n_neighbors``, ``min_dist``, ``perplexity`` ...).

    Returns
    -------
    xarray.Dataset
        Lazy ``embedding_<method>`` (item, component) and ``embedding_fitted`` (item,).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> import interpretome as it
    >>> rng = np.random.default_rng(0)
    >>> vec = np.concatenate([rng.normal(0, 1, (50, 5)), rng.normal(4, 1, (50, 5))])
    >>> items = xr.Dataset({"item_vector": (("item", "feature"), vec)})
    >>> emb = it.embed(items, method="pca", n_components=2, item_chunk=25)
    >>> emb["embedding_pca"].dims, emb["embedding_pca"].shape
    (('item', 'component'), (100, 2))
    >>> bool(emb["embedding_fitted"].all())
    True
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {METHODS}")
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    require_vars(ds, (vector,), "interpretome.storage.embedding_io (read_array, read_anndata, ...)")
    arr = ds[vector]
    if arr.ndim != 2 or arr.dims[0] != ITEM:
        raise ValueError(f"{vector!r} has dims {arr.dims}; embedding needs ({ITEM!r}, {FEATURE!r}): "
                         f"flatten it with interpretome.storage.embedding_io.as_item_vectors")
    n, n_feat = arr.shape
    n_components = int(n_components)
    if not 1 <= n_components <= n_feat:
        raise ValueError(f"n_components={n_components} but {vector!r} has {n_feat} features: ask for at most "
                         f"{n_feat} components (1..{n_feat})")
    if method == "tsne" and n_components > 3:
        raise ValueError(f"t-SNE gives 2 or 3 components, not {n_components}: use PCA for more")
    if n < 3:
        raise ValueError(f"{vector!r} has {n} items; embedding needs at least 3")
    if fit_size is not None and int(fit_size) < min(n, 3):
        raise ValueError(f"fit_size={fit_size} is too small to fit a reducer: give at least 3 (or None for all "
                         f"{n} items)")
    if not isinstance(arr.data, da.Array):
        check_finite_rows(np.asarray(arr.values), np.arange(n), arr[ITEM].values if ITEM in arr.coords else None)
    idx = fit_indices(n, fit_size, seed)
    subsample = idx.size < n
    if backend == "gpu" and method == "tsne" and subsample:
        resolve_backend("gpu", method, subsample)   # raises: cuML's t-SNE cannot transform

    x = da.asarray(arr.data).astype(np.float32).rechunk((int(item_chunk), n_feat))
    x_fit = x if not subsample else independent(x)[idx]
    fitted = dask.delayed(_fit, pure=True)(
        x_fit, idx, method=method, backend=backend, n_components=n_components, seed=int(seed),
        params=dict(params), subsample=subsample, dask_key_name=f"embed-fit-{dask.base.tokenize(x_fit, idx, method, backend, n_components, seed, params)}")
    index = da.arange(n, chunks=x.chunks[0], dtype=np.int64)
    coords = da.blockwise(_place_block, "ic", x, "if", index, "i", new_axes={"c": n_components},
                          concatenate=True, dtype=np.float32, meta=np.empty((0, 0), np.float32), fitted=fitted)
    fit_index = dask.delayed(idx, pure=True, traverse=False)   # one key, not a copy in every task
    fitted_mask = da.blockwise(_isin_block, "i", index, "i", dtype=bool, meta=np.empty((0,), bool),
                               fit_index=fit_index)
    name = f"embedding_{method}"
    item_coords = {k: v for k, v in arr.coords.items() if v.dims == (ITEM,)}
    new = xr.Dataset(
        {name: ((ITEM, COMPONENT), coords), "embedding_fitted": ((ITEM,), fitted_mask)},
        coords={**item_coords, COMPONENT: [f"{method}{i + 1}" for i in range(n_components)]},
    )
    new[name].attrs.update(method=method, seed=int(seed), backend=backend, fit_size=int(idx.size),
                           n_items=int(n), params=repr(dict(params)))
    validate(new, [name, "embedding_fitted"])
    return merge_result(ds, new, merge)


# --- filters and labels --------------------------------------------------------------------------

def _annotation(ds: xr.Dataset, name: str = "item_annotation") -> xr.DataArray:
    require_vars(ds, (name,), "interpretome.storage.embedding_io (annotation columns)")
    return ds[name]


def background_filter(ds: xr.Dataset, column: str, max_value: float = 0.005, *,
                      annotation: str = "item_annotation", merge: bool = True) -> xr.Dataset:
    """Return ``item_keep`` (item,) bool: True where annotation class ``column`` is <= ``max_value``.

    PathFlowAI's background filter (``-ma 0.005``): drop patches whose background annotation
    exceeds the threshold. NaN scores are dropped. Lazy; select with the computed mask
    (``ds.isel(item=ds.item_keep.values)``) in the job layer.
    """
    ann = _annotation(ds, annotation)
    classes = [str(c) for c in ann[CLASS].values]
    if column not in classes:
        raise ValueError(f"annotation column {column!r} not found; the annotation classes are {classes}")
    keep = ann.sel({CLASS: column}, drop=True) <= float(max_value)
    new = xr.Dataset({"item_keep": keep})
    new["item_keep"].attrs.update(column=column, max_value=float(max_value))
    validate(new, ["item_keep"])
    return merge_result(ds, new, merge)


def _argmax_block(values: np.ndarray, names: np.ndarray) -> np.ndarray:
    filled = np.where(np.isnan(values), -np.inf, values)
    out = names[np.argmax(filled, axis=1)].astype(names.dtype)
    out[np.isnan(values).all(axis=1)] = ""
    return out


def argmax_label(ds: xr.Dataset, columns: list[str] | None = None, *, annotation: str = "item_annotation",
                 merge: bool = True) -> xr.Dataset:
    """Return ``item_argmax`` (item,): the annotation class with the largest score among ``columns``.

    Ties go to the first of ``columns``; all-NaN rows give ``""``. Lazy.
    """
    ann = _annotation(ds, annotation)
    classes = [str(c) for c in ann[CLASS].values]
    columns = list(columns) if columns else classes
    missing = [c for c in columns if c not in classes]
    if missing:
        raise ValueError(f"annotation columns {missing} not found; the annotation classes are {classes}")
    sub = ann.sel({CLASS: columns})
    names = np.asarray(columns, dtype=str)
    data = da.asarray(sub.data).rechunk({1: -1})
    lab = da.map_blocks(_argmax_block, data, names=names, drop_axis=1, dtype=names.dtype)
    new = xr.Dataset({"item_argmax": ((ITEM,), lab)}, coords={k: v for k, v in sub.coords.items() if v.dims == (ITEM,)})
    validate(new, ["item_argmax"])
    return merge_result(ds, new, merge)
