"""Readers for dense-feature and image inputs: AnnData ``.h5ad`` and ``.npy`` / zarr image stacks.

``read_h5ad`` gives a lazy Dataset with ``features`` (sample, feature) float32 read chunk by chunk
from ``X`` or a named layer (dense HDF5 datasets are sliced; sparse CSR/CSC matrices are read one
row block at a time through ``anndata``'s backed sparse datasets and densified per chunk only), the
obs columns as coordinates along ``sample`` (categoricals as strings), and the var names as the
``feature`` coordinate. The graph carries only the path and row ranges, never the matrix.

``read_images`` gives ``image`` (sample, channel, height, width) float32 from a ``(N, C, H, W)``
``.npy`` (memory-mapped) or zarr array, read per sample chunk.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from dask.highlevelgraph import HighLevelGraph

from ..errors import InputError
from .schema import CHANNEL, FEATURE, HEIGHT, SAMPLE, WIDTH


def _chunks(total: int, size: int) -> tuple[int, ...]:
    size = max(1, int(size))
    return tuple(min(size, total - s) for s in range(0, total, size)) or (0,)


def _h5_matrix(f, layer: str | None):
    key = "X" if layer is None else f"layers/{layer}"
    if key not in f:
        have = sorted(f["layers"].keys()) if "layers" in f else []
        raise InputError(f"AnnData file has no layer {layer!r}; its layers are {have}: pass one of them or "
                         f"layer=None for X")
    return f[key]


def _sparse_dataset(node):
    try:
        from anndata.io import sparse_dataset
    except ImportError:  # anndata < 0.11
        from anndata.experimental import sparse_dataset
    return sparse_dataset(node)


def _read_rows(path: str, layer: str | None, r0: int, r1: int) -> np.ndarray:
    """Return rows ``[r0, r1)`` of X (or ``layer``) as dense float32 ``(r1 - r0, n_vars)``."""
    import h5py

    with h5py.File(path, "r") as f:
        node = _h5_matrix(f, layer)
        if isinstance(node, h5py.Dataset):
            block = node[r0:r1]
        else:
            block = _sparse_dataset(node)[r0:r1].toarray()
    return np.ascontiguousarray(block, dtype=np.float32)


def _matrix_shape(path: str, layer: str | None) -> tuple[int, int]:
    import h5py

    with h5py.File(path, "r") as f:
        node = _h5_matrix(f, layer)
        if isinstance(node, h5py.Dataset):
            return tuple(int(s) for s in node.shape)
        return tuple(int(s) for s in node.attrs["shape"])


def read_h5ad(path: str | os.PathLike, *, layer: str | None = None, sample_chunk: int = 256,
              obs: list[str] | None = None) -> xr.Dataset:
    """Return a lazy Dataset of an AnnData file.

    Variables: ``features`` (sample, feature) float32 chunked ``(sample_chunk, n_vars)``, from ``X``
    or ``layer``. Coordinates: ``sample`` = obs names, ``feature`` = var names, ``feature_idx``
    (feature) = column index in the file, and every obs column (or those in ``obs``) along
    ``sample``. Raises ``InputError`` for a missing file, layer or obs column.

    Parameters
    ----------
    path : str or PathLike
        The ``.h5ad`` file.
    layer : str, optional
        Read this layer instead of ``X``.
    sample_chunk : int
        Samples (cells) per chunk.
    obs : list of str, optional
        The obs columns to attach (default all).

    Returns
    -------
    Dataset
        ``features`` (sample, feature) float32 with the coordinates above. Lazy.

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.datasets import data_path
    >>> ds = it.read_h5ad(data_path("pbmc68k_reduced.h5ad"), obs=["bulk_labels"])
    >>> dict(ds.sizes), ds["features"].dtype.name
    ({'sample': 700, 'feature': 765}, 'float32')
    >>> ds["bulk_labels"].dims, ds["features"].chunks[0][:2]
    (('sample',), (256, 256))
    """
    import anndata

    path = Path(path)
    if not path.is_file():
        raise InputError(f"AnnData file {str(path)!r} does not exist: check the path")
    adata = anndata.read_h5ad(path, backed="r")
    try:
        obs_df = adata.obs.copy()
        obs_names = np.asarray(adata.obs_names).astype(str)
        var_names = np.asarray(adata.var_names).astype(str)
    finally:
        adata.file.close()
    n, f = _matrix_shape(str(path), layer)
    if (n, f) != (len(obs_names), len(var_names)):
        raise InputError(f"{str(path)!r}: matrix shape {(n, f)} disagrees with {len(obs_names)} obs x "
                         f"{len(var_names)} vars: the file is inconsistent")
    cols = list(obs_df.columns) if obs is None else list(obs)
    missing = [c for c in cols if c not in obs_df.columns]
    if missing:
        raise InputError(f"obs columns {missing} are not in {str(path)!r}; it has {list(obs_df.columns)}")
    rows = _chunks(n, sample_chunk)
    st = path.stat()
    token = hashlib.sha256(f"{path.resolve()}:{st.st_mtime_ns}:{layer}:{rows}".encode()).hexdigest()[:16]
    name = f"read-h5ad-{token}"
    dsk, r0 = {}, 0
    for i, r in enumerate(rows):
        dsk[(name, i, 0)] = (_read_rows, str(path), layer, r0, r0 + r)
        r0 += r
    arr = da.Array(HighLevelGraph.from_collections(name, dsk, dependencies=()), name,
                   chunks=(rows, (f,)), dtype=np.float32)
    coords = {SAMPLE: obs_names, FEATURE: var_names, "feature_idx": (FEATURE, np.arange(f))}
    for c in cols:
        col = obs_df[c]
        if str(col.dtype) == "category" or col.dtype.kind == "O":
            values = col.astype(str).to_numpy().astype(str)
        else:
            values = col.to_numpy()
        coords[c] = (SAMPLE, values)
    return xr.Dataset({"features": ((SAMPLE, FEATURE), arr)}, coords=coords,
                      attrs={"source": str(path), "layer": layer or "X"})


def features_to_dataset(x, *, features=None, samples=None, obs: dict | None = None,
                        sample_chunk: int = 256) -> xr.Dataset:
    """Return a Dataset like ``read_h5ad``'s from an in-memory ``(N, F)`` matrix (numpy or dask).

    Parameters
    ----------
    x : array-like (N, F)
        The matrix, samples by features.
    features, samples : sequence of str, optional
        Names (default ``f0``.. / ``s0``..).
    obs : dict, optional
        ``{name: (N,) values}`` coordinates along ``sample``.
    sample_chunk : int
        Samples per chunk.

    Returns
    -------
    Dataset
        ``features`` (sample, feature) float32, coordinates ``sample``, ``feature``, ``feature_idx``
        and ``obs``.

    Examples
    --------
    >>> import numpy as np
    >>> import interpretome as it
    >>> ds = it.features_to_dataset(np.arange(6.0).reshape(3, 2), features=["g1", "g2"])
    >>> dict(ds.sizes), ds["sample"].values.tolist()
    ({'sample': 3, 'feature': 2}, ['s0', 's1', 's2'])
    >>> ds["features"].values.tolist()
    [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    """
    x = x if isinstance(x, da.Array) else da.from_array(np.asarray(x, np.float32), chunks=(sample_chunk, -1))
    if x.ndim != 2:
        raise InputError(f"features must be a (samples, features) matrix, got shape {x.shape}")
    n, f = x.shape
    coords = {SAMPLE: np.asarray(samples if samples is not None else [f"s{i}" for i in range(n)]).astype(str),
              FEATURE: np.asarray(features if features is not None else [f"f{j}" for j in range(f)]).astype(str),
              "feature_idx": (FEATURE, np.arange(f))}
    for k, v in (obs or {}).items():
        coords[k] = (SAMPLE, np.asarray(v))
    return xr.Dataset({"features": ((SAMPLE, FEATURE), x.astype(np.float32))}, coords=coords)


def _read_images(path: str, s0: int, s1: int) -> np.ndarray:
    if path.endswith(".npy"):
        return np.ascontiguousarray(np.load(path, mmap_mode="r")[s0:s1], dtype=np.float32)
    import zarr

    return np.ascontiguousarray(zarr.open_array(path, mode="r")[s0:s1], dtype=np.float32)


def read_images(path: str | os.PathLike, *, sample_chunk: int = 64, labels=None) -> xr.Dataset:
    """Return a lazy Dataset with ``image`` (sample, channel, height, width) float32.

    ``path`` is a ``.npy`` file (memory-mapped) or a zarr array holding ``(N, C, H, W)`` values.
    ``labels`` (optional, N values) become the ``label`` coordinate along ``sample``.

    Parameters
    ----------
    path : str or PathLike
        A ``.npy`` file or a zarr array of ``(N, C, H, W)`` values.
    sample_chunk : int
        Images per chunk.
    labels : sequence, optional
        One label per image.

    Returns
    -------
    Dataset
        ``image`` (sample, channel, height, width) float32 [and the ``label`` (sample,) coordinate]. Lazy.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import interpretome as it
    >>> path = os.path.join(tempfile.mkdtemp(), "images.npy")
    >>> np.save(path, np.ones((3, 1, 4, 4), np.float32))
    >>> ds = it.read_images(path, labels=["x", "y", "x"])
    >>> dict(ds.sizes), ds["label"].values.tolist()
    ({'sample': 3, 'channel': 1, 'height': 4, 'width': 4}, ['x', 'y', 'x'])
    >>> float(ds["image"].sum().compute())
    48.0
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"image file {str(path)!r} does not exist: check the path")
    if path.suffix == ".npy":
        shape = np.load(path, mmap_mode="r").shape
    else:
        import zarr

        try:
            shape = zarr.open_array(str(path), mode="r").shape
        except Exception as e:  # noqa: BLE001 - zarr raises several types for a non-array path
            raise InputError(f"{str(path)!r} is neither a .npy file nor a zarr array ({e})") from e
    if len(shape) != 4:
        raise InputError(f"images in {str(path)!r} have shape {shape}; expected (N, C, H, W): add a channel "
                         f"axis (e.g. x[:, None]) or move channels first")
    n = shape[0]
    rows = _chunks(n, sample_chunk)
    token = hashlib.sha256(f"{path.resolve()}:{path.stat().st_mtime_ns}:{rows}".encode()).hexdigest()[:16]
    name = f"read-images-{token}"
    dsk, r0 = {}, 0
    for i, r in enumerate(rows):
        dsk[(name, i, 0, 0, 0)] = (_read_images, str(path), r0, r0 + r)
        r0 += r
    arr = da.Array(HighLevelGraph.from_collections(name, dsk, dependencies=()), name,
                   chunks=(rows, (shape[1],), (shape[2],), (shape[3],)), dtype=np.float32)
    coords = {SAMPLE: np.arange(n)}
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != n:
            raise InputError(f"{len(labels)} labels for {n} images: pass one label per image")
        coords["label"] = (SAMPLE, labels)
    return xr.Dataset({"image": ((SAMPLE, CHANNEL, HEIGHT, WIDTH), arr)}, coords=coords,
                      attrs={"source": str(path)})
