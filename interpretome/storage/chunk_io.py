"""Writing chunks: one task per chunk of a lazy variable, its record written after its data.

``write_chunk`` runs on the workers; ``run_writes`` submits the write tasks (releasing each
finished future at once, so a lost worker never makes dask recompute a written chunk);
``init_group`` creates a group's arrays and records what it writes up front; it stores every
variable with its declared attrs (``schema.annotate``), attrs in netCDF-compatible form
(``groups.netcdf_attrs``) and in-memory strings as fixed-width unicode (``<U``), so a stored group
opens in plain xarray described and converts with ``to_netcdf()``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dask
import numpy as np
import xarray as xr

from . import manifest
from .groups import ZARR_FORMAT, consolidate, ensure_root, netcdf_attrs, set_group_attrs, stored_chunks
from .progress import ChunkProgress
from .schema import annotate


def write_chunk(block: np.ndarray, array_path: str, region: tuple[slice, ...], index: tuple[int, ...],
                 marker: str) -> int:
    """Write one block into an existing zarr array, then record its manifest; return 1.

    The manifest record holds the size and sha256 of the chunk file as stored. A chunk whose
    manifest already holds a valid record (a task that dask ran again, e.g. after a lost worker)
    is not written again: 0 is returned.
    """
    import zarr

    adir = Path(array_path)
    sep = manifest.array_meta(adir).get("dimension_separator") or "."
    file = manifest.chunk_file(adir, index, sep)
    if Path(marker).exists() and manifest.check_file(file, manifest.read_marker(Path(marker)), full=False) is None:
        return 0
    z = zarr.open_array(array_path, mode="r+", zarr_format=ZARR_FORMAT).with_config({"write_empty_chunks": True})
    z[region] = np.asarray(block)
    manifest.write_marker(Path(marker), manifest.file_record(file))
    return 1


def regular_chunks(arr):
    """Return ``arr`` rechunked so every chunk but the last along each axis has the same size."""
    chunks = []
    need = False
    for c in arr.chunks:
        size = max(c) if c else 1
        if any(x != size for x in c[:-1]) or (c and c[-1] > size):
            need = True
        chunks.append(size)
    return arr.rechunk(tuple(chunks)) if need else arr


def needed_bytes(ds: xr.Dataset, path: Path) -> int:
    """Return the bytes a write needs: data (uncompressed, +5%) plus a filesystem block per file.

    Every chunk is one data file and one manifest file; each occupies at least one block.
    """
    probe = path
    while not probe.exists():
        probe = probe.parent
    block = getattr(os.statvfs(probe), "f_frsize", 4096) or 4096
    n_files = 8 * len(ds.variables) + 16
    for v in ds.variables.values():
        n_files += 2 * int(np.prod(v.data.numblocks)) if v.chunks is not None else 1
    return int(sum(v.nbytes for v in ds.variables.values()) * 1.05) + n_files * block


def grid_changes(path: Path, group: str, ds: xr.Dataset, lazy_vars: list[str]) -> list[str]:
    """Return ``var: stored chunks -> new chunks`` for lazy variables chunked differently from the store."""
    out = []
    for v in lazy_vars:
        old, new = stored_chunks(path, group, v), tuple(ds[v].data.chunksize)
        if old is not None and old != new:
            dims = ", ".join(map(str, ds[v].dims))
            out.append(f"{v} ({dims}): {old} -> {new}")
    return out


def _fixed_width(values: np.ndarray) -> np.ndarray | None:
    """Return string ``values`` (object or numpy StringDType) as fixed-width ``<U``; None if not all strings."""
    if values.dtype.kind not in "OT":
        return None
    flat = values.ravel()
    if values.dtype.kind == "O" and not all(isinstance(v, str) for v in flat):
        return None
    width = max([len(v) for v in flat.tolist()] + [1])
    return values.astype(f"<U{width}")


def stored_form(ds: xr.Dataset, lazy_vars: list[str]) -> xr.Dataset:
    """Return ``ds`` as it is stored: declared attrs, netCDF-compatible attrs, fixed-width strings.

    In-memory string arrays (object or numpy StringDType, e.g. read back from a store) become
    ``<U<longest>``, so every stored string variable has one dtype family; lazy variables keep theirs.
    """
    ds = annotate(ds)
    for name in list(ds.variables):
        if name in lazy_vars or ds[name].chunks is not None:
            continue
        fixed = _fixed_width(np.asarray(ds[name].values))
        if fixed is not None:
            var = ds.variables[name]
            new = xr.Variable(var.dims, fixed, attrs=var.attrs)
            ds = ds.assign_coords({name: new}) if name in ds.coords else ds.assign({name: new})
    for name, var in ds.variables.items():
        var.attrs = netcdf_attrs(var.attrs)
    ds.attrs = netcdf_attrs(ds.attrs)
    return ds


def init_group(ds: xr.Dataset, path: Path, group: str, lazy_vars: list[str], info: dict) -> None:
    """Create the group's arrays, write its numpy-backed variables and coordinates, record them.

    The group is written in its ``stored_form`` with status ``running``.
    """
    if (path / group).exists():
        shutil.rmtree(path / group)
    path.mkdir(parents=True, exist_ok=True)
    ensure_root(path)
    ds = stored_form(ds, lazy_vars)
    encoding = {v: {"chunks": ds[v].data.chunksize} for v in lazy_vars}
    for v in ds.data_vars:
        ds[v].encoding = {}
    ds.to_zarr(str(path), group=group, mode="w", compute=False, zarr_format=ZARR_FORMAT,
               consolidated=False, encoding=encoding, write_empty_chunks=True)
    manifest.record_static(path, group, [v for v in ds.variables if v not in lazy_vars])
    manifest.init_records(path, group, {v: (ds[v].dims, ds[v].data.numblocks) for v in lazy_vars})
    set_group_attrs(path, group, info, status="running")
    consolidate(path)


def run_writes(tasks: list, client, label: str, show: bool) -> tuple[int, int]:
    """Run the write tasks; return (chunks written, tasks that found their chunk already written).

    On a cluster each finished future is released at once without gathering its result, so a
    worker lost later holds nothing that dask would have to recompute: a written chunk is not
    computed again (only the chunks in flight on the lost worker are). The counts are then
    taken from the futures' states: every finished task counts as written.
    """
    bar = ChunkProgress(label, len(tasks), enabled=show)
    if client is None:
        results = dask.compute(*tasks)
        return int(sum(results)), len(results) - int(sum(results))
    from distributed import as_completed

    pending = set(client.compute(tasks))
    try:
        for fut in as_completed(list(pending)):
            pending.discard(fut)
            if fut.status == "error":
                fut.result()  # raises the task's exception
            fut.release()
            bar.advance()
    except BaseException:
        client.cancel(list(pending))
        raise
    finally:
        bar.close()
    return len(tasks), 0
