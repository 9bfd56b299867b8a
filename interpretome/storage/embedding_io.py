"""Inputs for embeddings: every reader returns a Dataset with ``item_vector`` (item, feature).

- k-mer vocabularies: label helpers ``first_bases``, ``last_bases``, ``gc_fraction`` colour k-mers
  as Genomic-ULMFiT does (a model's ``nn.Embedding`` is read by ``tasks.embedding_layer``, which
  builds the model: storage never does).
- ``read_array(path)``: a 2-D ``.npy`` (memory-mapped) or zarr array, lazily chunked.
- ``read_anndata(path, obsm=...)``: an ``.obsm`` key (or ``X``) of an AnnData ``.h5ad``, with
  ``obs`` columns as ``item_label`` / ``item_batch`` and extra item coordinates.
- ``from_store(store, group, variable)``: interpretome's own outputs (e.g. ``attribution``), all
  dims after the first flattened into features.
- ``read_pickled_embeddings(path, trust_pickle=True)``: a PathFlowAI-style pickled DataFrame of
  embedding dims plus annotation columns (``item_annotation`` (item, class)). Unpickling runs
  code from the file, so it is refused unless ``trust_pickle=True`` (``--trust-pickle``).
- ``read_embedding_input(path, ...)``: dispatch on the file kind (used by the CLI).
"""

from __future__ import annotations

import os
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from ..errors import InputError
from .alphabet import is_dna
from .schema import CLASS, FEATURE, ITEM
from .trust import require_pickle_opt_in

PICKLE_SUFFIXES = (".pkl", ".pickle", ".p")


# --- k-mer vocabularies ----------------------------------------------------------------------------

def first_bases(tokens, n: int = 1, special: str = "special") -> np.ndarray:
    """Return the first ``n`` bases of each k-mer token (``special`` for non-k-mer tokens such as xxpad)."""
    if n < 1:
        raise ValueError(f"first_bases needs n >= 1, got {n}")
    return np.array([t[:n] if is_dna(t) else special for t in map(str, tokens)], dtype=object)


def last_bases(tokens, n: int = 1, special: str = "special") -> np.ndarray:
    """Return the last ``n`` bases of each k-mer token (``special`` for non-k-mer tokens)."""
    if n < 1:
        raise ValueError(f"last_bases needs n >= 1, got {n}")
    return np.array([t[-n:] if is_dna(t) else special for t in map(str, tokens)], dtype=object)


def gc_fraction(tokens) -> np.ndarray:
    """Return the G+C fraction of each k-mer token (NaN for non-k-mer tokens), float64."""
    return np.array([(t.count("G") + t.count("C")) / len(t) if is_dna(t) else np.nan for t in map(str, tokens)])


# --- finite rows (shared by embed and clustering_scores) ------------------------------------------

N_CITED = 5
"""How many bad rows an error cites."""


def _nonfinite_message(name: str, n_bad: int, rows, labels, purpose: str) -> str:
    rows = [int(r) for r in rows][:N_CITED]
    more = " ..." if n_bad > len(rows) else ""
    named = ""
    if labels is not None and any(str(labels[r]) != str(r) for r in rows):
        named = f", items {[str(labels[r]) for r in rows]}{more}"
    return (f"{name} has NaN or infinite values in {n_bad} rows (item indices {rows}{more}){named}: drop those "
            f"items (e.g. ds.isel(item=np.isfinite(x).all(1))) or fill them before {purpose}")


def check_finite_rows(x: np.ndarray, index: np.ndarray, labels=None, *, name: str = "item_vector",
                      purpose: str = "embedding") -> None:
    """Raise ``ValueError`` when rows of ``x`` (n, feature) hold NaN or inf, naming how many and the first few.

    ``index`` (n,) are the rows' global item indices; ``labels`` (indexable by global index, e.g.
    the ``item`` coordinate) names them too; ``purpose`` ends the message ("before embedding").
    """
    bad = ~np.isfinite(np.asarray(x)).all(axis=1)
    if bad.any():
        raise ValueError(_nonfinite_message(name, int(bad.sum()), np.asarray(index)[bad][:N_CITED], labels, purpose))


def _bad_rows_block(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Return ``(1, 1 + N_CITED)`` int64: the block's number of non-finite rows, then the first indices (-1 pad)."""
    bad = index[~np.isfinite(x).all(axis=1)]
    out = np.full((1, 1 + N_CITED), -1, np.int64)
    out[0, 0] = bad.size
    out[0, 1:1 + min(bad.size, N_CITED)] = bad[:N_CITED]
    return out


def _raise_bad_rows(summary: np.ndarray, labels, name: str, purpose: str) -> np.ndarray:
    n_bad = int(summary[:, 0].sum())
    if n_bad:
        rows = summary[:, 1:].reshape(-1)
        raise ValueError(_nonfinite_message(name, n_bad, rows[rows >= 0], labels, purpose))
    return np.array(True)


def finite_rows_check(x: da.Array, labels=None, *, name: str = "item_vector", purpose: str = "scoring") -> da.Array:
    """Return a lazy 0-d True that raises ``check_finite_rows``' error when computed over NaN/inf rows.

    A cheap reduction (one pass, a few integers per block); make results depend on it with
    ``after_check`` so none is computed without it.
    """
    x = x.rechunk({1: -1})
    index = da.arange(x.shape[0], chunks=(x.chunks[0],), dtype=np.int64)
    per_block = da.blockwise(_bad_rows_block, "ic", x, "if", index, "i", new_axes={"c": 1 + N_CITED},
                             adjust_chunks={"i": 1}, concatenate=True, dtype=np.int64,
                             meta=np.empty((0, 0), np.int64))
    labels_d = None if labels is None else dask.delayed(np.asarray(labels), pure=True, traverse=False)
    ok = dask.delayed(_raise_bad_rows, pure=True)(per_block, labels_d, name, purpose)
    return da.from_delayed(ok, shape=(), dtype=bool)


def _first(block, _ok):
    return block


def after_check(arr: da.Array, ok: da.Array) -> da.Array:
    """Return ``arr`` made to depend on the 0-d check ``ok`` (each block waits for it; values unchanged)."""
    ind = tuple(range(arr.ndim))
    return da.blockwise(_first, ind, arr, ind, ok, (), dtype=arr.dtype, meta=arr._meta)


# --- arrays ----------------------------------------------------------------------------------------

def _as_dataset(arr, chunk: int, source: str, names=None) -> xr.Dataset:
    if arr.ndim != 2:
        raise InputError(f"{source} has shape {tuple(arr.shape)}; an embedding input must be 2-D (items, features): "
                         f"reshape it, e.g. x.reshape(len(x), -1)")
    data = arr if isinstance(arr, da.Array) else da.from_array(arr, chunks=(int(chunk), arr.shape[1]))
    if data.dtype.kind not in "fiub":
        raise InputError(f"{source} has dtype {data.dtype}; embedding needs numbers")
    if data.dtype.kind != "f":
        data = data.astype(np.float32)
    coords = {ITEM: np.asarray(names)} if names is not None else {}
    ds = xr.Dataset({"item_vector": ((ITEM, FEATURE), data)}, coords=coords)
    ds.attrs["source"] = source
    return ds


def read_array(path: str | os.PathLike, *, chunk: int = 10_000, component: str | None = None) -> xr.Dataset:
    """Return ``item_vector`` (item, feature) from a ``.npy`` file (memory-mapped) or a zarr array.

    ``component`` picks an array inside a zarr group. Lazy: chunks of ``chunk`` items.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"embedding input {str(path)!r} does not exist")
    if path.suffix == ".npy":
        return _as_dataset(np.load(path, mmap_mode="r", allow_pickle=False), chunk, str(path))
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Group):
        arrays = sorted(k for k, _ in node.arrays())
        if component is None:
            if len(arrays) != 1:
                raise InputError(f"zarr group {str(path)!r} holds arrays {arrays}: pick one with component= "
                                 f"(--array)")
            component = arrays[0]
        if component not in arrays:
            raise InputError(f"zarr group {str(path)!r} has no array {component!r}; it has {arrays}")
        node = node[component]
    return _as_dataset(da.from_zarr(node, chunks=(int(chunk), node.shape[1] if node.ndim == 2 else -1)),
                       chunk, str(path))


def read_anndata(path: str | os.PathLike, *, obsm: str | None = "X_pca", label: str | None = None,
                 batch: str | None = None, columns=(), chunk: int = 10_000) -> xr.Dataset:
    """Return ``item_vector`` from ``adata.obsm[obsm]`` (or ``adata.X`` when ``obsm`` is None or "X").

    ``label`` / ``batch`` name ``obs`` columns stored as ``item_label`` / ``item_batch`` (strings);
    ``columns`` are other ``obs`` columns kept as item coordinates. ``item`` = ``obs_names``.
    """
    import anndata

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"AnnData file {str(path)!r} does not exist")
    adata = anndata.read_h5ad(path, backed="r")
    try:
        if obsm in (None, "X"):
            x = adata.X
            x = np.asarray(x.toarray() if hasattr(x, "toarray") else x[:])
        else:
            keys = list(adata.obsm.keys())
            if obsm not in keys:
                raise InputError(f"{str(path)!r} has no obsm key {obsm!r}; its obsm keys are {keys} (or use X)")
            x = np.asarray(adata.obsm[obsm])
        obs = adata.obs.copy()
        names = np.asarray(adata.obs_names, dtype=str)
    finally:
        if getattr(adata, "file", None) is not None:
            adata.file.close()
    ds = _as_dataset(x.astype(np.float32, copy=False), chunk, f"{path}:{obsm or 'X'}", names)
    for var, col in (("item_label", label), ("item_batch", batch)):
        if col is not None:
            if col not in obs.columns:
                raise InputError(f"{str(path)!r} has no obs column {col!r}; its columns are {list(obs.columns)}")
            ds[var] = (ITEM, np.asarray(obs[col].astype(str), dtype=str))
    for col in columns:
        if col not in obs.columns:
            raise InputError(f"{str(path)!r} has no obs column {col!r}; its columns are {list(obs.columns)}")
        values = obs[col]
        ds = ds.assign_coords({col: (ITEM, np.asarray(values.astype(str), dtype=str) if values.dtype.kind not in "fiub" else values.to_numpy())})
    return ds


def as_item_vectors(arr: xr.DataArray, *, chunk: int | None = None) -> xr.Dataset:
    """Return ``item_vector`` (item, feature) from any N-D variable: its first dim becomes ``item``,
    the others are flattened (C order) into ``feature``. NaN stays NaN (the embedding refuses it)."""
    if arr.ndim < 2:
        raise InputError(f"{arr.name!r} has dims {arr.dims}; it needs at least 2 dims to give vectors")
    first = arr.dims[0]
    data = da.asarray(arr.data)
    if chunk:
        data = data.rechunk({0: int(chunk)})
    n_feat = int(np.prod(arr.shape[1:]))
    flat = data.rechunk({i: -1 for i in range(1, arr.ndim)}).reshape(arr.shape[0], n_feat)
    coords = {ITEM: np.asarray(arr[first].values)} if first in arr.coords else {}
    ds = xr.Dataset({"item_vector": ((ITEM, FEATURE), flat)}, coords=coords)
    ds.attrs["source"] = f"{arr.name} {tuple(arr.dims)} flattened"
    return ds


def from_store(store: str | os.PathLike, group: str, variable: str, *, chunk: int | None = None) -> xr.Dataset:
    """Return ``item_vector`` from a variable of an interpretome store (e.g. ``attribution``)."""
    from .store import open_group

    ds = open_group(store, group)
    if variable not in ds.data_vars:
        raise InputError(f"group {group!r} of {str(store)!r} has no variable {variable!r}; it has {sorted(ds.data_vars)}")
    return as_item_vectors(ds[variable], chunk=chunk)


# --- PathFlowAI pickles ----------------------------------------------------------------------------

def read_pickled_embeddings(path: str | os.PathLike, *, trust_pickle: bool = False, dims=None,
                            annotations=None, chunk: int = 10_000) -> xr.Dataset:
    """Return ``item_vector`` and ``item_annotation`` from a PathFlowAI-style pickled DataFrame.

    The file holds a pandas DataFrame (or a dict with an ``"embeddings"`` DataFrame) whose columns
    are the embedding dims (integer or digit names by default, or ``dims``) and annotation columns
    (the other numeric columns by default, or ``annotations``); ``ID`` becomes the item coordinate
    when present. Refused unless ``trust_pickle=True``: unpickling executes code from the file.
    """
    path = require_pickle_opt_in(path, trust_pickle, what="embedding", instead="convert it to npy/zarr/h5ad")
    obj = pd.read_pickle(path)
    if isinstance(obj, dict) and "embeddings" in obj:
        obj = obj["embeddings"]
    if not isinstance(obj, pd.DataFrame):
        raise InputError(f"{str(path)!r} holds a {type(obj).__name__}, not a pandas DataFrame of embeddings")
    df = obj
    if dims is None:
        dims = [c for c in df.columns if isinstance(c, (int, np.integer)) or str(c).isdigit()]
    if not dims:
        raise InputError(f"{str(path)!r} has no embedding-dimension columns (integer names); its columns are "
                         f"{list(df.columns)[:12]}: name them with dims=")
    meta = {"ID", "x", "y", "patch_size", "image", "ImageID"}
    if annotations is None:
        annotations = [c for c in df.columns if c not in dims and str(c) not in meta
                       and pd.api.types.is_numeric_dtype(df[c])]
    names = df["ID"].astype(str).to_numpy() if "ID" in df.columns else None
    ds = _as_dataset(df[dims].to_numpy(np.float32), chunk, str(path), names)
    if annotations:
        ds["item_annotation"] = ((ITEM, CLASS), df[annotations].to_numpy(np.float64))
        ds = ds.assign_coords({CLASS: [str(a) for a in annotations]})
    for c in ("x", "y"):
        if c in df.columns:
            ds = ds.assign_coords({f"patch_{c}": (ITEM, df[c].to_numpy())})
    return ds


# --- dispatch ----------------------------------------------------------------------------------------

def read_embedding_input(path: str | os.PathLike, *, obsm: str | None = "X_pca", label: str | None = None,
                         batch: str | None = None, columns=(), group: str | None = None,
                         variable: str | None = None, array: str | None = None, trust_pickle: bool = False,
                         chunk: int = 10_000) -> xr.Dataset:
    """Return the embedding input Dataset of ``path`` by its kind: .h5ad, .npy, zarr array or
    interpretome store (with ``group``/``variable``), or a pickle (with ``trust_pickle``).

    Parameters
    ----------
    path : str or PathLike
        The input: ``.h5ad``, ``.npy``, a zarr array, an interpretome store or a pickle.
    obsm : str, optional
        The ``.h5ad`` obsm key to embed (None or ``"X"``: ``X``).
    label, batch : str, optional
        The obs columns (h5ad) or coordinates (store) holding each item's label and batch.
    columns : sequence of str
        Further obs columns to keep as coordinates.
    group, variable : str, optional
        A store's group and its (item, feature) variable.
    array : str, optional
        The array inside a zarr store.
    trust_pickle : bool
        Allow a pickle to load (it can run code).
    chunk : int
        Items per chunk.

    Returns
    -------
    Dataset
        ``item_vector`` (item, feature) float32 [and ``item_label`` / ``item_batch`` (item,)]; attrs
        ``source``. Lazy.

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.datasets import data_path
    >>> ds = it.read_embedding_input(data_path("pbmc68k_reduced.h5ad"), label="bulk_labels")
    >>> dict(ds.sizes), ds["item_vector"].dims
    ({'item': 700, 'feature': 50}, ('item', 'feature'))
    >>> str(ds["item_label"].values[0])
    'CD14+ Monocyte'
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        ds = read_pickled_embeddings(p, trust_pickle=trust_pickle, chunk=chunk)
    elif suffix == ".h5ad":
        return read_anndata(p, obsm=obsm, label=label, batch=batch, columns=columns, chunk=chunk)
    elif suffix == ".npy":
        ds = read_array(p, chunk=chunk)
    elif group is not None or variable is not None:
        if group is None or variable is None:
            raise InputError("an interpretome store input needs both --group and --variable")
        ds = from_store(p, group, variable, chunk=chunk)
    elif p.is_dir() or suffix == ".zarr":
        ds = read_array(p, chunk=chunk, component=array)
    else:
        raise InputError(f"cannot tell the kind of {str(p)!r}: use .h5ad, .npy, a zarr array/store, or a pickle "
                         f"(.pkl with --trust-pickle)")
    if label is not None or batch is not None:
        raise InputError(f"--label/--batch name AnnData obs columns; {str(p)!r} is not an .h5ad file")
    return ds
