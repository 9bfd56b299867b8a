"""Helpers for mapping model calls over chunks: dask inputs, aligned index arrays, merging results."""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from ..storage.schema import require


def as_dask(values, chunks) -> da.Array:
    """Return ``values`` as a dask array with ``chunks`` (dask arrays are rechunked, numpy wrapped)."""
    if isinstance(values, da.Array):
        return values.rechunk(chunks)
    return da.from_array(np.asarray(values), chunks=chunks)


def independent(x: da.Array) -> da.Array:
    """Return ``x`` computed by a copy of its graph under new keys (same values, chunks and dtype).

    For an input that every block of a result needs as a whole — a background sample, a mean
    baseline, a training subset, a reducer's fit sample — taken from the array the blocks map
    over. Taken from ``x`` itself, the selection or reduction shares ``x``'s chunk keys with the
    blocks: the scheduler then loads each chunk it draws rows from and keeps it in memory until
    that chunk's own block runs, which cannot start before the whole selection is done — a random
    sample of 100 rows pins most of a million-row input at once, and per-worker memory grows
    with the input instead of the chunk. Taken from the copy, each chunk is read, gives its rows
    and is freed; the chunks it touches are read twice (the copy's and the block's read), so the
    upstream should be a read (file, store, array), not an expensive computation.

    The copy renames every key of ``x``'s (materialised, O(chunks)) graph, inside the tasks too.
    ``dask.graph_manipulation.clone`` would be the library's way, but it leaves the keys inside
    task objects unrenamed (dask/dask#12455: a clone of a rechunked array fails to fuse).
    """
    from dask._task_spec import convert_legacy_graph
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    suffix = "-independent-" + tokenize(x, "independent")[:12]

    def renamed(key):
        return (key[0] + suffix,) + tuple(key[1:]) if isinstance(key, tuple) else key + suffix

    dsk = convert_legacy_graph(dict(x.__dask_graph__()))
    subs = {k: renamed(k) for k in dsk}
    copy = {subs[k]: node.substitute(subs, key=subs[k]) for k, node in dsk.items()}
    name = x.name + suffix
    return da.Array(HighLevelGraph.from_collections(name, copy, dependencies=()), name, chunks=x.chunks,
                    dtype=x.dtype, meta=x._meta)


def index_array(n: int, chunks) -> da.Array:
    """Return ``arange(n)`` as a dask array with ``chunks`` (global indices travel with each block)."""
    return da.arange(n, chunks=chunks, dtype=np.int64)


def chunk_size(chunks: tuple[int, ...]) -> int:
    """Return the regular chunk size of a dask chunk tuple (its first chunk)."""
    return int(chunks[0]) if chunks else 1


def require_vars(ds: xr.Dataset, names: tuple[str, ...], producer: str) -> None:
    """Raise ``ValueError`` naming the missing input variables and where they come from."""
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise ValueError(f"the input dataset has no {missing}: build it with {producer}")


def sample_feature_data(ds: xr.Dataset, var: str, needed_by: str) -> da.Array:
    """Return ``ds[var]`` as a dask array (sample, feature) (numpy data wrapped as float32 in one chunk).

    Raises ``ValueError`` naming the reader when ``var`` is missing, and the dims when they are not
    (sample, feature); ``needed_by`` completes "... has dims ...; <needed_by>".
    """
    from ..storage.schema import FEATURE, SAMPLE

    require_vars(ds, (var,), "interpretome.storage.anndata_io.read_h5ad")
    if ds[var].dims != (SAMPLE, FEATURE):
        raise ValueError(f"{var!r} has dims {ds[var].dims}; {needed_by}")
    x = ds[var].data
    return x if isinstance(x, da.Array) else da.from_array(np.asarray(x, np.float32))


def sequence_codes(ds: xr.Dataset, sequence_var: str, length_var: str, producer: str, chunks) -> da.Array:
    """Return ``ds[sequence_var]`` as a dask array (numpy input chunked ``chunks``), after checking
    that it and ``ds[length_var]`` fit the registered ``sequence_code`` / ``sequence_length``
    (present, dims, dtype kind: metadata only; ``producer`` named when they are missing)."""
    require_vars(ds, (sequence_var, length_var), producer)
    require(ds, sequence_var, "sequence_code", producer)
    require(ds, length_var, "sequence_length", producer)
    codes = ds[sequence_var].data
    if not isinstance(codes, da.Array):
        codes = da.from_array(np.asarray(codes), chunks=chunks)
    return codes


def merge_result(ds: xr.Dataset, new: xr.Dataset, merge: bool) -> xr.Dataset:
    """Return ``new`` merged into ``ds`` (when ``merge``), refusing coordinates that disagree."""
    if not merge:
        return new
    try:
        return xr.merge([ds, new], join="exact", compat="override", combine_attrs="override")
    except ValueError as e:
        raise ValueError(
            f"the result's coordinates differ from the input's ({e}); pass merge=False to get the "
            f"result as its own Dataset"
        ) from e
