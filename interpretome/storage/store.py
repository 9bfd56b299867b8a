"""The zarr store: one store per job, one group per task, chunk manifests for resume, provenance.

Format: **zarr format 2** (written with zarr-python 3 or 2). Format 2 is what every reader in the
field opens today — zarr-python 2 on HPC images, xarray of any recent version, R (Rarr / pizzarr),
Java (n5-zarr) and JavaScript viewers — and its consolidated metadata is part of the format, so
``xr.open_zarr(path, group=...)`` opens a result without warnings and without interpretome.
Format 3's gains (sharding) matter for millions of tiny chunks, which our chunking avoids.

Layout::

    store.zarr/
      .zattrs                 interpretome version, created time
      <group>/                one per task: sweep/, ism/, tracks/, attributions/ ...
        .zattrs               interpretome: {task, fingerprint, params, provenance, complete, timings}
        <variable>/           zarr arrays, chunks equal to the dask chunks
        .interpretome/done/<variable>/<i.j.k>   manifest: one empty file per written chunk

A chunk's manifest file is created only after its data is written, and ``complete`` is set only
once every chunk of every variable has its file, so an interrupted job never looks complete.
A rerun with the same fingerprint writes only chunks without a file (resume); a rerun with
another fingerprint refuses unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import hashlib
import itertools
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import dask
import numpy as np
import xarray as xr

ZARR_FORMAT = 2
_META = ".interpretome"
_ATTR = "interpretome"


class StoreError(RuntimeError):
    """A store cannot be written as asked (conflicting parameters, unwritable location ...)."""


@dataclass
class WriteReport:
    """What ``write_dataset`` did: chunks written now, chunks found already done, seconds taken."""

    group: str
    computed_chunks: int
    skipped_chunks: int
    seconds: float
    variables: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """Return a one-line human summary."""
        return (f"{self.group}: wrote {self.computed_chunks} chunks, "
                f"{self.skipped_chunks} already done, {self.seconds:.1f} s")


@dataclass
class PlannedWrite:
    """What ``write_dataset`` would write, recorded instead of writing inside ``planning()``.

    ``chunks``: chunks of the dask-backed variables; ``done``: those already in the store's
    manifest (same parameters); ``nbytes``: bytes of all data variables (uncompressed);
    ``graph_tasks``: tasks in the dask graph; ``state``: new | resume | complete | conflict.
    """

    group: str
    task: str
    chunks: int
    done: int
    nbytes: int
    graph_tasks: int
    state: str
    variables: dict[str, tuple[int, ...]] = field(default_factory=dict)


_PLAN: contextvars.ContextVar[list | None] = contextvars.ContextVar("interpretome_plan", default=None)


@contextlib.contextmanager
def planning():
    """Context in which ``write_dataset`` records a ``PlannedWrite`` (yielded list) and writes nothing."""
    token = _PLAN.set([])
    try:
        yield _PLAN.get()
    finally:
        _PLAN.reset(token)


# --- JSON helpers -------------------------------------------------------------------------------

def _jsonable(obj: Any) -> Any:
    """Return ``obj`` converted to plain JSON types (numpy scalars/arrays, paths, tuples, sets)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(_jsonable(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    return repr(obj)


def fingerprint(params: dict) -> str:
    """Return the sha256 hex digest of ``params`` as canonical JSON (sorted keys)."""
    text = json.dumps(_jsonable(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --- location checks ----------------------------------------------------------------------------

def check_writable(path: str | os.PathLike, needed_bytes: int = 0) -> Path:
    """Return ``path`` as a Path after checking it can be written, before any work starts.

    Raises ``StoreError`` naming the problem when the nearest existing ancestor is not a
    directory, is not writable, or has less free space than ``needed_bytes``.
    """
    path = Path(path)
    probe = path if path.exists() else path.parent
    while not probe.exists():
        probe = probe.parent
    if path.exists() and not path.is_dir():
        raise StoreError(f"output {str(path)!r} exists and is not a directory: choose another -o path")
    if not probe.is_dir():
        raise StoreError(f"output {str(path)!r} lies under {str(probe)!r}, which is a file, not a folder: "
                         f"choose another -o path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StoreError(
            f"output location {str(probe)!r} is read-only for this user: choose a writable -o path "
            f"(or fix its permissions) before starting the job"
        )
    free = shutil.disk_usage(probe).free
    if needed_bytes and free < needed_bytes:
        raise StoreError(
            f"output location {str(probe)!r} has {free / 1e6:.1f} MB free but the results need about "
            f"{needed_bytes / 1e6:.1f} MB: free space or choose another -o path"
        )
    return path


# --- group state ----------------------------------------------------------------------------------

def _group_attrs(path: Path, group: str) -> dict | None:
    f = path / group / ".zattrs"
    if not f.exists():
        return None
    with open(f) as fh:
        return json.load(fh)


def group_info(path: str | os.PathLike, group: str) -> dict | None:
    """Return the ``interpretome`` attrs of ``group`` in the store at ``path`` (None if absent)."""
    attrs = _group_attrs(Path(path), group)
    return None if attrs is None else attrs.get(_ATTR)


def list_groups(path: str | os.PathLike) -> list[str]:
    """Return the names of the task groups of a store, sorted."""
    path = Path(path)
    return sorted(p.name for p in path.iterdir() if (p / ".zgroup").exists()) if path.exists() else []


def _set_group_attrs(path: Path, group: str, info: dict) -> None:
    import zarr

    g = zarr.open_group(str(path / group), mode="r+", zarr_format=ZARR_FORMAT)
    g.attrs[_ATTR] = _jsonable(info)


def _consolidate(path: Path) -> None:
    import warnings

    import zarr

    with warnings.catch_warnings():  # the manifest folders are not zarr nodes, by design
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        zarr.consolidate_metadata(str(path), zarr_format=ZARR_FORMAT)


def _ensure_root(path: Path) -> None:
    import zarr

    from .. import __version__

    root = zarr.open_group(str(path), mode="a", zarr_format=ZARR_FORMAT)
    if _ATTR not in root.attrs:
        root.attrs[_ATTR] = {"version": __version__, "created": _now()}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Return readable ``key: old -> new`` lines for the keys where two param dicts differ."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


# --- chunk manifest -------------------------------------------------------------------------------

def _done_dir(path: Path, group: str, var: str) -> Path:
    return path / group / _META / "done" / var


def _chunk_key(index: tuple[int, ...]) -> str:
    return ".".join(map(str, index)) if index else "0"


def _write_chunk(block: np.ndarray, array_path: str, region: tuple[slice, ...], marker: str) -> int:
    """Write one block into an existing zarr array, then create its manifest file; return 1."""
    import zarr

    z = zarr.open_array(array_path, mode="r+", zarr_format=ZARR_FORMAT)
    z[region] = np.asarray(block)
    tmp = f"{marker}.tmp{os.getpid()}"
    with open(tmp, "w"):
        pass
    os.replace(tmp, marker)
    return 1


def _regular_chunks(arr):
    """Return ``arr`` rechunked so every chunk but the last along each axis has the same size."""
    chunks = []
    need = False
    for c in arr.chunks:
        size = max(c) if c else 1
        if any(x != size for x in c[:-1]) or (c and c[-1] > size):
            need = True
        chunks.append(size)
    return arr.rechunk(tuple(chunks)) if need else arr


def write_dataset(
    ds: xr.Dataset,
    path: str | os.PathLike,
    group: str,
    *,
    task: str,
    params: dict,
    provenance: dict | None = None,
    overwrite: bool = False,
    client=None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> WriteReport:
    """Write a lazy Dataset to ``path``/``group`` chunk by chunk, resuming an interrupted write.

    ``params`` identify the result (their fingerprint decides between resume and refusal);
    ``provenance`` (versions, model digest, input digests ...) is stored beside them. Dask-backed
    data variables are written one chunk per task with a manifest file per chunk; numpy-backed
    variables and coordinates are written at initialisation. With ``client`` the chunks run on
    that cluster (with a progress bar when ``progress``), otherwise on the current dask scheduler.

    Returns a ``WriteReport``. Raises ``StoreError`` when the group holds a result of other
    parameters and ``overwrite`` is false, or the location cannot be written.
    """
    t0 = time.perf_counter()
    path = Path(path)
    log = log or (lambda msg: None)
    fp = fingerprint({"task": task, "params": params})
    plan = _PLAN.get()
    if plan is not None:
        plan.append(_plan_write(ds, path, group, task, fp))
        return WriteReport(group, 0, 0, 0.0)
    needed = int(sum(v.nbytes for v in ds.data_vars.values()) * 1.05)
    check_writable(path, needed)

    info = group_info(path, group) if (path / group).exists() else None
    if info is not None and info.get("fingerprint") != fp:
        if not overwrite:
            changes = _diff({"task": info.get("task"), **(info.get("params") or {})}, {"task": task, **_jsonable(params)})
            raise StoreError(
                f"group {group!r} of store {str(path)!r} holds a result computed with other parameters "
                f"({'; '.join(changes[:6]) or 'fingerprint differs'}): pass overwrite=True (--overwrite) "
                f"to replace it, or write to another store"
            )
        info = None
    if info is None and (path / group).exists():
        shutil.rmtree(path / group)

    ds = ds.copy()
    for name in list(ds.variables):
        if ds[name].chunks is not None:
            ds[name] = ds[name].copy(data=_regular_chunks(ds[name].data))
    lazy_vars = [v for v in ds.data_vars if ds[v].chunks is not None]
    lazy_coords = [c for c in ds.coords if ds[c].chunks is not None]
    if lazy_coords:
        ds = ds.assign_coords({c: ds[c].compute() for c in lazy_coords})

    if info is None:
        path.mkdir(parents=True, exist_ok=True)
        _ensure_root(path)
        encoding = {v: {"chunks": ds[v].data.chunksize} for v in lazy_vars}
        for v in ds.data_vars:
            ds[v].encoding = {}
        ds.to_zarr(str(path), group=group, mode="w", compute=False, zarr_format=ZARR_FORMAT,
                   consolidated=False, encoding=encoding)
        info = {
            "task": task,
            "fingerprint": fp,
            "params": params,
            "provenance": provenance or {},
            "complete": False,
            "started": _now(),
            "variables": {v: list(ds[v].dims) for v in ds.data_vars},
        }
        _set_group_attrs(path, group, info)
        _consolidate(path)

    tasks, total, per_var = [], 0, {}
    for v in lazy_vars:
        arr = ds[v].data
        done_dir = _done_dir(path, group, v)
        done_dir.mkdir(parents=True, exist_ok=True)
        done = set(os.listdir(done_dir))
        blocks = arr.to_delayed(optimize_graph=False)
        starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in arr.chunks]
        n_new = 0
        for index in itertools.product(*[range(len(c)) for c in arr.chunks]):
            total += 1
            key = _chunk_key(index)
            if key in done:
                continue
            region = tuple(slice(int(s[i]), int(s[i]) + int(c[i])) for s, c, i in zip(starts, arr.chunks, index))
            block = blocks[index]
            tasks.append(dask.delayed(_write_chunk, pure=False)(
                block, str(path / group / v), region, str(done_dir / key)))
            n_new += 1
        per_var[v] = n_new
    n_new = len(tasks)
    log(f"{group}: {n_new} of {total} chunks to compute ({total - n_new} already in the store)")
    if tasks:
        if client is not None:
            futures = client.compute(tasks)
            if progress:
                from distributed import progress as _progress

                _progress(futures)
            client.gather(futures)
        else:
            dask.compute(*tasks)

    # Completion check: every chunk of every lazy variable has its manifest file.
    missing = []
    for v in lazy_vars:
        n_chunks = int(np.prod([len(c) for c in ds[v].data.chunks]))
        have = len([f for f in os.listdir(_done_dir(path, group, v)) if ".tmp" not in f])
        if have < n_chunks:
            missing.append(f"{v}: {n_chunks - have} chunks")
    if missing:
        raise StoreError(f"group {group!r} is incomplete after writing ({', '.join(missing)}); rerun to resume")
    seconds = time.perf_counter() - t0
    info = group_info(path, group)
    info["complete"] = True
    info["finished"] = _now()
    info.setdefault("timings", []).append({"seconds": round(seconds, 3), "chunks_computed": n_new})
    _set_group_attrs(path, group, info)
    _consolidate(path)
    return WriteReport(group, n_new, total - n_new, seconds, per_var)


def _plan_write(ds: xr.Dataset, path: Path, group: str, task: str, fp: str) -> PlannedWrite:
    """Return the PlannedWrite of ``ds`` (chunk counts from the lazy graph; nothing is computed)."""
    lazy = {v: _regular_chunks(ds[v].data).numblocks for v in ds.data_vars if ds[v].chunks is not None}
    chunks = int(sum(int(np.prod(n)) for n in lazy.values()))
    info = group_info(path, group) if (path / group).exists() else None
    done, state = 0, "new"
    if info is not None and info.get("fingerprint") != fp:
        state = "conflict"
    elif info is not None:
        for v in lazy:
            d = _done_dir(path, group, v)
            if d.exists():
                done += len([f for f in os.listdir(d) if ".tmp" not in f])
        state = "complete" if info.get("complete") else "resume"
    graph = ds.__dask_graph__()
    return PlannedWrite(group, task, chunks, min(done, chunks), int(sum(v.nbytes for v in ds.data_vars.values())),
                        len(graph) if graph is not None else 0, state, {v: tuple(n) for v, n in lazy.items()})


def open_group(path: str | os.PathLike, group: str, *, require_complete: bool = True) -> xr.Dataset:
    """Open one task group of a store with ``xr.open_zarr``.

    Raises ``StoreError`` when the group is absent, or incomplete and ``require_complete``.
    """
    path = Path(path)
    info = group_info(path, group)
    if info is None:
        raise StoreError(f"store {str(path)!r} has no group {group!r}; it has {list_groups(path)}")
    if require_complete and not info.get("complete"):
        raise StoreError(
            f"group {group!r} of store {str(path)!r} is incomplete (an interrupted run): rerun the "
            f"same job to resume it, or pass require_complete=False to read the written part"
        )
    return xr.open_zarr(str(path), group=group, consolidated=False)


def file_digest(path: str | os.PathLike, _cache: dict = {}) -> str:  # noqa: B006 - process cache
    """Return ``sha256:<hex>`` of a file's bytes (cached per process by path, size and mtime)."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _cache[key] = f"sha256:{h.hexdigest()}"
    return _cache[key]


def library_versions() -> dict[str, str]:
    """Return the installed versions of the libraries a result depends on."""
    from importlib.metadata import PackageNotFoundError, version

    import platform

    out = {"python": platform.python_version()}
    for name in ("interpretome", "numpy", "dask", "distributed", "xarray", "zarr", "torch", "captum",
                 "shap", "pandas", "scikit-learn", "umap-learn", "openTSNE", "ccc-coef", "datashader"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def provenance(*, model=None, inputs: list[str | os.PathLike] | tuple = ()) -> dict:
    """Return the provenance record for a task: versions, host, time, model spec and input digests."""
    import platform

    rec: dict[str, Any] = {"versions": library_versions(), "created": _now(), "host": platform.node()}
    if model is not None:
        rec["model"] = model.describe()
    rec["inputs"] = {str(p): file_digest(p) for p in inputs if p and os.path.isfile(p)}
    return rec


def store_summary(path: str | os.PathLike) -> str:
    """Return a multi-line text summary of a store: groups, variables, completeness, parameters."""
    from .schema import REGISTRY

    path = Path(path)
    if not (path / ".zgroup").exists():
        raise StoreError(f"{str(path)!r} is not an interpretome store (no .zgroup): check the path")
    lines = [f"store {path}"]
    for g in list_groups(path):
        info = group_info(path, g) or {}
        state = "complete" if info.get("complete") else "INCOMPLETE (rerun to resume)"
        lines.append(f"[{g}] task={info.get('task')} {state}")
        params = info.get("params") or {}
        if params:
            lines.append("  params: " + json.dumps(params, sort_keys=True)[:400])
        model = (info.get("provenance") or {}).get("model")
        if model:
            lines.append(f"  model: {model.get('source')} weights {model.get('weights_sha256', '-')[:19]}")
        ds = xr.open_zarr(str(path), group=g, consolidated=False)
        for v in ds.data_vars:
            doc = REGISTRY[v].doc if v in REGISTRY else ""
            shape = "x".join(map(str, ds[v].shape))
            lines.append(f"  {v} ({', '.join(map(str, ds[v].dims))}) {shape} {ds[v].dtype}  {doc}")
    return "\n".join(lines)
