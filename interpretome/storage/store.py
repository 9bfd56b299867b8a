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

from ..errors import StoreError
from . import manifest
from .lock import StoreLockedError, check_unlocked, store_lock
from .manifest import Damage
from .progress import ChunkProgress

ZARR_FORMAT = 2
_ATTR = "interpretome"


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
    ``graph_tasks``: tasks in the dask graph; ``state``: new | resume | complete | damaged |
    conflict; ``changes``: for a conflict, ``key: stored -> new`` lines (parameters, or chunking).
    """

    group: str
    task: str
    chunks: int
    done: int
    nbytes: int
    graph_tasks: int
    state: str
    variables: dict[str, tuple[int, ...]] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)


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
    import zarr

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


# --- chunk writes --------------------------------------------------------------------------------

def _write_chunk(block: np.ndarray, array_path: str, region: tuple[slice, ...], index: tuple[int, ...],
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


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a write: the message says how many chunks are stored and how to resume."""


def _needed_bytes(ds: xr.Dataset, path: Path) -> int:
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


def _stored_chunks(path: Path, group: str, var: str) -> tuple[int, ...] | None:
    """Return the chunk shape of a stored array (None when absent)."""
    f = path / group / var / ".zarray"
    return tuple(manifest.array_meta(f.parent)["chunks"]) if f.exists() else None


def _grid_changes(path: Path, group: str, ds: xr.Dataset, lazy_vars: list[str]) -> list[str]:
    """Return ``var: stored chunks -> new chunks`` for lazy variables chunked differently from the store."""
    out = []
    for v in lazy_vars:
        old, new = _stored_chunks(path, group, v), tuple(ds[v].data.chunksize)
        if old is not None and old != new:
            dims = ", ".join(map(str, ds[v].dims))
            out.append(f"{v} ({dims}): {old} -> {new}")
    return out


def holds_result(path: Path, group: str, info: dict) -> bool:
    """Return whether a group holds any written result (complete, or at least one chunk manifest)."""
    if info.get("complete"):
        return True
    done = path / group / manifest.META_DIR / "done"
    return done.exists() and any(manifest.present_records(d) for d in done.iterdir() if d.is_dir())


def _init_group(ds: xr.Dataset, path: Path, group: str, lazy_vars: list[str], info: dict) -> None:
    """Create the group's arrays, write its numpy-backed variables and coordinates, record them."""
    if (path / group).exists():
        shutil.rmtree(path / group)
    path.mkdir(parents=True, exist_ok=True)
    _ensure_root(path)
    encoding = {v: {"chunks": ds[v].data.chunksize} for v in lazy_vars}
    for v in ds.data_vars:
        ds[v].encoding = {}
    ds.to_zarr(str(path), group=group, mode="w", compute=False, zarr_format=ZARR_FORMAT,
               consolidated=False, encoding=encoding, write_empty_chunks=True)
    manifest.record_static(path, group, [v for v in ds.variables if v not in lazy_vars])
    manifest.init_records(path, group, {v: (ds[v].dims, ds[v].data.numblocks) for v in lazy_vars})
    _set_group_attrs(path, group, info)
    _consolidate(path)


def _run_writes(tasks: list, client, label: str, show: bool) -> tuple[int, int]:
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
    data variables are written one chunk per task with a manifest record (size, sha256) per
    chunk; numpy-backed variables and coordinates are written and recorded at initialisation.
    With ``client`` the chunks run on that cluster (with a progress line when ``progress``),
    otherwise on the current dask scheduler.

    A rerun with the same parameters and chunking computes only the chunks without a valid
    record: missing, interrupted, or damaged (deleted, truncated, checksum mismatch). The store
    is locked against a second writer while this runs. ``overwrite`` recomputes everything.

    Returns a ``WriteReport``. Raises ``StoreError`` when the group holds a result of other
    parameters or of another chunking and ``overwrite`` is false, when another run holds the
    store, or when the location cannot be written; ``RunInterrupted`` on Ctrl-C.
    """
    t0 = time.perf_counter()
    path = Path(path)
    log = log or (lambda msg: None)
    fp = fingerprint({"task": task, "params": params})
    plan = _PLAN.get()
    if plan is not None:
        plan.append(_plan_write(ds, path, group, task, params, fp))
        return WriteReport(group, 0, 0, 0.0)

    ds = ds.copy()
    for name in list(ds.variables):
        if ds[name].chunks is not None:
            ds[name] = ds[name].copy(data=_regular_chunks(ds[name].data))
    lazy_vars = [v for v in ds.data_vars if ds[v].chunks is not None]
    lazy_coords = [c for c in ds.coords if ds[c].chunks is not None]
    if lazy_coords:
        ds = ds.assign_coords({c: ds[c].compute() for c in lazy_coords})
    check_writable(path, _needed_bytes(ds, path))
    try:
        with store_lock(path, log=log):
            return _write_locked(ds, path, group, task, params, fp, provenance, overwrite, client,
                                 progress, log, lazy_vars, t0)
    except StoreLockedError as e:
        raise StoreError(str(e)) from None


def _write_locked(ds, path, group, task, params, fp, provenance, overwrite, client, progress, log,
                  lazy_vars, t0) -> WriteReport:
    """The body of ``write_dataset`` under the store's lock."""
    info = group_info(path, group) if (path / group).exists() else None
    if info is not None and not overwrite and holds_result(path, group, info):
        if info.get("fingerprint") != fp:
            changes = _diff({"task": info.get("task"), **(info.get("params") or {})},
                            {"task": task, **_jsonable(params)})
            raise StoreError(
                f"group {group!r} of store {str(path)!r} holds a result computed with other parameters "
                f"({'; '.join(changes[:6]) or 'fingerprint differs'}): pass --overwrite (overwrite=True "
                f"in Python) to replace it, or write to another store"
            )
        regrid = _grid_changes(path, group, ds, lazy_vars)
        if regrid and not info.get("complete"):
            raise StoreError(
                f"group {group!r} of store {str(path)!r} was started with another chunking "
                f"({'; '.join(regrid[:4])}) and is not complete: rerun with the chunking it was started "
                f"with (the same --sequence-chunk / --position-chunk / chunk options) to resume it, or "
                f"pass --overwrite (overwrite=True in Python) to recompute it with this one"
            )
        if regrid:
            scan = manifest.scan_group(path, group, list((info.get("lazy") or lazy_vars)), full=True)
            if not scan.damaged and not any(scan.missing.values()):
                log(f"{group}: complete in the store (computed with chunks {'; '.join(regrid[:2])}); "
                    f"nothing to compute")
                return WriteReport(group, 0, scan.n_total, time.perf_counter() - t0)
            raise StoreError(
                f"group {group!r} of store {str(path)!r} has {len(scan.damaged)} damaged chunks and was "
                f"computed with another chunking ({'; '.join(regrid[:4])}): rerun with that chunking to "
                f"repair it, or pass --overwrite (overwrite=True in Python) to recompute it"
            )
    else:
        info = None
    if info is None:
        info = {"task": task, "fingerprint": fp, "params": params, "provenance": provenance or {},
                "complete": False, "started": _now(), "lazy": lazy_vars,
                "variables": {v: list(ds[v].dims) for v in ds.data_vars}}
        _init_group(ds, path, group, lazy_vars, info)

    scan = manifest.scan_group(path, group, lazy_vars, full=True)
    static_bad = [d for d in scan.damaged if d.variable not in lazy_vars]
    if static_bad:
        log(f"{group}: {len(static_bad)} damaged chunks of its coordinates or in-memory variables "
            f"({static_bad[0]}); rewriting the group")
        info = {**info, "complete": False, "started": _now()}
        _init_group(ds, path, group, lazy_vars, info)
        scan = manifest.scan_group(path, group, lazy_vars, full=True)
    if scan.damaged:
        log(f"{group}: {len(scan.damaged)} damaged chunks will be computed again "
            f"({'; '.join(map(str, scan.damaged[:3]))}{' ...' if len(scan.damaged) > 3 else ''})")
        manifest.forget(path, scan.damaged)
        if info.get("complete"):
            info = {**info, "complete": False}
            _set_group_attrs(path, group, info)
            _consolidate(path)

    tasks, per_var = [], {}
    for v in lazy_vars:
        arr = ds[v].data
        done_dir = manifest.done_dir(path, group, v)
        done = scan.done.get(v, set())
        blocks = arr.to_delayed(optimize_graph=False)
        starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in arr.chunks]
        n_new = 0
        for index in itertools.product(*[range(len(c)) for c in arr.chunks]):
            key = manifest.chunk_key(index)
            if key in done:
                continue
            region = tuple(slice(int(s[i]), int(s[i]) + int(c[i])) for s, c, i in zip(starts, arr.chunks, index))
            tasks.append(dask.delayed(_write_chunk, pure=False)(
                blocks[index], str(path / group / v), region, index, str(done_dir / key)))
            n_new += 1
        per_var[v] = n_new
    total = scan.n_total
    n_new = len(tasks)
    log(f"{group}: {n_new} of {total} chunks to compute ({total - n_new} already in the store)")
    try:
        written, repeated = _run_writes(tasks, client, group, progress) if tasks else (0, 0)
    except KeyboardInterrupt:
        stored = manifest.scan_group(path, group, lazy_vars, full=False).n_done
        raise RunInterrupted(f"interrupted: {stored} of {total} chunks of group {group!r} are stored in "
                             f"{str(path)!r}; run the same command again to resume") from None
    if repeated:
        log(f"{group}: {repeated} write tasks ran again (a lost worker) and found their chunk written; "
            f"not rewritten")

    final = manifest.scan_group(path, group, lazy_vars, full=False)
    missing = [f"{v}: {n} chunks" for v, n in final.missing.items() if n]
    if missing or final.damaged:
        raise StoreError(f"group {group!r} is incomplete after writing ({', '.join(missing)}"
                         f"{'; damaged: ' + str(final.damaged[0]) if final.damaged else ''}); rerun to resume")
    seconds = time.perf_counter() - t0
    info = group_info(path, group)
    info["complete"] = True
    info["finished"] = _now()
    info.setdefault("timings", []).append({"seconds": round(seconds, 3), "chunks_computed": written})
    _set_group_attrs(path, group, info)
    _consolidate(path)
    return WriteReport(group, n_new, total - n_new, seconds, per_var)


def _plan_write(ds: xr.Dataset, path: Path, group: str, task: str, params: dict, fp: str) -> PlannedWrite:
    """Return the PlannedWrite of ``ds`` (chunk counts from the lazy graph; nothing is computed).

    Raises ``StoreError`` when a live run holds the store's lock.
    """
    try:
        check_unlocked(path)
    except StoreLockedError as e:
        raise StoreError(str(e)) from None
    regular = {v: _regular_chunks(ds[v].data) for v in ds.data_vars if ds[v].chunks is not None}
    lazy = {v: a.numblocks for v, a in regular.items()}
    chunks = int(sum(int(np.prod(n)) for n in lazy.values()))
    info = group_info(path, group) if (path / group).exists() else None
    done, state, changes = 0, "new", []
    if info is not None and not holds_result(path, group, info):
        info = None
    if info is not None and info.get("fingerprint") != fp:
        state = "conflict"
        changes = _diff({"task": info.get("task"), **(info.get("params") or {})}, {"task": task, **_jsonable(params)})
    elif info is not None:
        regrid = [f"chunks of {v}: {_stored_chunks(path, group, v)} -> {tuple(a.chunksize)}"
                  for v, a in regular.items() if _stored_chunks(path, group, v) not in (None, tuple(a.chunksize))]
        scan = manifest.scan_group(path, group, list(lazy), full=False)
        done = scan.n_done
        if regrid and not info.get("complete"):
            state, changes = "conflict", regrid
        elif scan.damaged:
            state = "damaged"
        else:
            state = "complete" if info.get("complete") else "resume"
    graph = ds.__dask_graph__()
    return PlannedWrite(group, task, chunks, min(done, chunks), int(sum(v.nbytes for v in ds.data_vars.values())),
                        len(graph) if graph is not None else 0, state, {v: tuple(n) for v, n in lazy.items()},
                        changes)


def group_state(path: str | os.PathLike, group: str, *, full: bool = False) -> tuple[str, list[Damage]]:
    """Return the state of a group — ``complete``, ``damaged``, ``incomplete`` — and its damage.

    ``full`` compares every chunk's sha256 (``interpretome verify``); otherwise existence and
    size are checked (a stat per chunk). Missing chunk manifests of a complete group are damage.
    """
    path = Path(path)
    info = group_info(path, group) or {}
    lazy = info.get("lazy")
    if lazy is None:  # a group written before the manifest records: the chunked variables have done dirs
        base = path / group / manifest.META_DIR / "done"
        lazy = sorted(d.name for d in base.iterdir() if d.is_dir()) if base.exists() else []
    scan = manifest.scan_group(path, group, list(lazy), full=full)
    damage = list(scan.damaged)
    if info.get("complete"):
        for v, n in scan.missing.items():
            present = scan.done.get(v, set()) | {d.chunk for d in scan.damaged if d.variable == v}
            if n and len(present) < scan.total[v]:
                meta = manifest.array_meta(path / group / v)
                for index in manifest.chunk_keys(meta):
                    key = manifest.chunk_key(index)
                    if key not in present:
                        damage.append(Damage(group, v, key, "chunk manifest record is missing"))
    if damage:
        return "damaged", damage
    return ("complete" if info.get("complete") else "incomplete"), []


def verify_store(path: str | os.PathLike, groups: list[str] | None = None) -> dict[str, tuple[str, list[Damage]]]:
    """Check every chunk of every (or the given) group against its recorded size and sha256.

    Returns ``{group: (state, [Damage, ...])}`` with state ``complete``, ``damaged`` or
    ``incomplete``. Raises ``StoreError`` for a path that is not a store or an unknown group.
    """
    path = Path(path)
    if not (path / ".zgroup").exists():
        raise StoreError(f"{str(path)!r} is not an interpretome store (no .zgroup): check the path")
    names = list_groups(path)
    for g in groups or []:
        if g not in names:
            raise StoreError(f"store {str(path)!r} has no group {g!r}; it has {names}")
    return {g: group_state(path, g, full=True) for g in (groups or names)}


def open_group(path: str | os.PathLike, group: str, *, require_complete: bool = True) -> xr.Dataset:
    """Open one task group of a store with ``xr.open_zarr``, after a quick check of its chunks.

    Raises ``StoreError`` when the group is absent, or incomplete and ``require_complete``, or
    when a chunk file is missing or of the wrong size (naming the variable and the chunk).
    """
    path = Path(path)
    info = group_info(path, group)
    if info is None:
        raise StoreError(f"store {str(path)!r} has no group {group!r}; it has {list_groups(path)}")
    state, damage = group_state(path, group)
    if state == "damaged":
        raise StoreError(
            f"group {group!r} of store {str(path)!r} is damaged: {'; '.join(map(str, damage[:3]))}"
            f"{f' (and {len(damage) - 3} more)' if len(damage) > 3 else ''}; `interpretome verify "
            f"{path}` lists every bad chunk, and rerunning the job that made it recomputes them"
        )
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
        state, damage = group_state(path, g)
        label = {"complete": "complete", "incomplete": "INCOMPLETE (rerun to resume)",
                 "damaged": f"damaged ({len(damage)} bad chunks, e.g. {damage[0]}; `interpretome verify` "
                 f"lists them, rerunning the job repairs them)" if damage else "damaged"}[state]
        lines.append(f"[{g}] task={info.get('task')} {label}")
        params = info.get("params") or {}
        if params:
            lines.append("  params: " + json.dumps(params, sort_keys=True)[:400])
        prov = info.get("provenance") or {}
        model = prov.get("model")
        if model:
            digest = params.get("model_digest") or prov.get("model_digest") or "-"
            lines.append(f"  model: {model.get('source')} weights file {model.get('weights_sha256', '-')[:16]} "
                         f"parameters {digest}")
        for name, digest in (params.get("input_digests") or prov.get("inputs") or {}).items():
            lines.append(f"  input: {name} {digest}")
        ds = xr.open_zarr(str(path), group=g, consolidated=False)
        for v in ds.data_vars:
            doc = REGISTRY[v].doc if v in REGISTRY else ""
            shape = "x".join(map(str, ds[v].shape))
            lines.append(f"  {v} ({', '.join(map(str, ds[v].dims))}) {shape} {ds[v].dtype}  {doc}")
    return "\n".join(lines)
