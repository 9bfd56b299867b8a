"""The zarr store: one store per job, one group per task, chunk manifests for resume, provenance.

Format: **zarr format 2** (written with zarr-python 3 or 2). Format 2 is what every reader in the
field opens today — zarr-python 2 on HPC images, xarray of any recent version, R (Rarr / pizzarr),
Java (n5-zarr) and JavaScript viewers — and its consolidated metadata is part of the format, so
``xr.open_zarr(path, group=...)`` opens a result without warnings and without interpretome.
Format 3's gains (sharding) matter for millions of tiny chunks, which our chunking avoids.

Layout::

    store.zarr/
      .zattrs                 interpretome version, created time, run history
      <group>/                one per task: sweep/, ism/, tracks/, attributions/ ...
        .zattrs               interpretome: JSON text of {task, fingerprint, params, provenance, complete,
                              timings}; interpretome_task, interpretome_fingerprint, interpretome_status
                              (running / complete / interrupted / damaged: a mirror of the records)
        <variable>/           zarr arrays, chunks equal to the dask chunks
        .interpretome/        chunk records (see ``manifest``): size and sha256 of each written chunk

This module writes (``write_dataset``, ``planning``) and opens (``open_group``) results and is the
storage layer's public face: it re-exports the group helpers of ``groups`` (``group_info``,
``group_state``, ``verify_store``, ``store_summary`` ...). Chunk writing lives in ``chunk_io``,
the records in ``manifest``, the writer's lock in ``lock``, progress lines in ``progress``.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import dask
import numpy as np
import xarray as xr

from ..errors import StoreError, StoreLockedError
from . import manifest
from .chunk_io import grid_changes, init_group, needed_bytes, regular_chunks, run_writes
from .chunk_io import write_chunk as _write_chunk
from .groups import (ATTR, JSON_ATTRS, STATUS_ATTR, ZARR_FORMAT, consolidate, decoded_attr,  # noqa: F401
                     diff_params, fingerprint, group_info, group_state, group_status, holds_result, jsonable,
                     list_groups, now, set_group_attrs, set_group_status, store_summary, stored_chunks,
                     verify_store)
from .digests import file_digest  # noqa: F401 - part of the store's public face
from .lock import check_unlocked, store_lock
from .provenance import library_versions, provenance  # noqa: F401


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

# --- chunk writes --------------------------------------------------------------------------------

class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a write: the message says how many chunks are stored and how to resume."""


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

    Parameters
    ----------
    ds : Dataset
        The (lazy) result to store.
    path : str or PathLike
        The zarr store.
    group : str
        The group inside the store.
    task : str
        The task name recorded with the group.
    params : dict
        The parameters identifying the result.
    provenance : dict, optional
        Stored beside ``params``.
    overwrite : bool
        Recompute and replace every chunk.
    client : distributed.Client, optional
        Run the chunks on this cluster.
    progress : bool
        Print a progress line (with ``client``).
    log : callable, optional
        Receives one-line status messages.

    Returns
    -------
    WriteReport
        ``group``, ``computed_chunks``, ``skipped_chunks``, ``seconds`` and ``variables`` (chunks
        computed per variable).

    Examples
    --------
    >>> import os, tempfile
    >>> import interpretome as it
    >>> ds = it.sequences_to_dataset({"a": "ACGT", "b": "GG"})
    >>> store = os.path.join(tempfile.mkdtemp(), "demo.zarr")
    >>> it.write_dataset(ds, store, "seqs", task="copy", params={}).computed_chunks
    1
    >>> it.write_dataset(ds, store, "seqs", task="copy", params={}).skipped_chunks
    1
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
            ds[name] = ds[name].copy(data=regular_chunks(ds[name].data))
    lazy_vars = [v for v in ds.data_vars if ds[v].chunks is not None]
    lazy_coords = [c for c in ds.coords if ds[c].chunks is not None]
    if lazy_coords:
        ds = ds.assign_coords({c: ds[c].compute() for c in lazy_coords})
    check_writable(path, needed_bytes(ds, path))
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
            changes = diff_params({"task": info.get("task"), **(info.get("params") or {})},
                            {"task": task, **jsonable(params)})
            raise StoreError(
                f"group {group!r} of store {str(path)!r} holds a result computed with other parameters "
                f"({'; '.join(changes[:6]) or 'fingerprint differs'}): pass --overwrite (overwrite=True "
                f"in Python) to replace it, or write to another store"
            )
        regrid = grid_changes(path, group, ds, lazy_vars)
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
                "complete": False, "started": now(), "lazy": lazy_vars,
                "variables": {v: list(ds[v].dims) for v in ds.data_vars}}
        init_group(ds, path, group, lazy_vars, info)

    scan = manifest.scan_group(path, group, lazy_vars, full=True)
    static_bad = [d for d in scan.damaged if d.variable not in lazy_vars]
    if static_bad:
        log(f"{group}: {len(static_bad)} damaged chunks of its coordinates or in-memory variables "
            f"({static_bad[0]}); rewriting the group")
        info = {**info, "complete": False, "started": now()}
        init_group(ds, path, group, lazy_vars, info)
        scan = manifest.scan_group(path, group, lazy_vars, full=True)
    if scan.damaged:
        log(f"{group}: {len(scan.damaged)} damaged chunks will be computed again "
            f"({'; '.join(map(str, scan.damaged[:3]))}{' ...' if len(scan.damaged) > 3 else ''})")
        manifest.forget(path, scan.damaged)
        if info.get("complete"):
            info = {**info, "complete": False}
            set_group_attrs(path, group, info, status="running")
            consolidate(path)

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
    if tasks and group_status(path, group) != "running":
        set_group_status(path, group, "running")
    try:
        written, repeated = run_writes(tasks, client, group, progress) if tasks else (0, 0)
    except KeyboardInterrupt:
        _mark_interrupted(path, group)
        stored = manifest.scan_group(path, group, lazy_vars, full=False).n_done
        raise RunInterrupted(f"interrupted: at least {stored} of {total} chunks of group {group!r} are stored in "
                             f"{str(path)!r}; run the same command again to resume") from None
    except BaseException:
        _mark_interrupted(path, group)
        raise
    if repeated:
        log(f"{group}: {repeated} write tasks ran again (a lost worker) and found their chunk written; "
            f"not rewritten")

    final = manifest.scan_group(path, group, lazy_vars, full=False)
    missing = [f"{v}: {n} chunks" for v, n in final.missing.items() if n]
    if missing or final.damaged:
        _mark_interrupted(path, group)
        raise StoreError(f"group {group!r} is incomplete after writing ({', '.join(missing)}"
                         f"{'; damaged: ' + str(final.damaged[0]) if final.damaged else ''}); rerun to resume")
    seconds = time.perf_counter() - t0
    info = group_info(path, group)
    info["complete"] = True
    info["finished"] = now()
    info.setdefault("timings", []).append({"seconds": round(seconds, 3), "chunks_computed": written})
    set_group_attrs(path, group, info, status="complete")  # the scan above found every chunk recorded
    consolidate(path)
    return WriteReport(group, n_new, total - n_new, seconds, per_var)


def _mark_interrupted(path: Path, group: str) -> None:
    """Set a group's status attr to ``interrupted`` after a write stopped before every chunk was recorded.

    Best effort: the attr is a mirror for readers without interpretome and the stopping error is
    what the caller must see; if the attr cannot be written it still says ``running``, never complete.
    """
    with contextlib.suppress(Exception):
        set_group_status(path, group, "interrupted")


def _plan_write(ds: xr.Dataset, path: Path, group: str, task: str, params: dict, fp: str) -> PlannedWrite:
    """Return the PlannedWrite of ``ds`` (chunk counts from the lazy graph; nothing is computed).

    Raises ``StoreError`` when a live run holds the store's lock.
    """
    try:
        check_unlocked(path)
    except StoreLockedError as e:
        raise StoreError(str(e)) from None
    regular = {v: regular_chunks(ds[v].data) for v in ds.data_vars if ds[v].chunks is not None}
    lazy = {v: a.numblocks for v, a in regular.items()}
    chunks = int(sum(int(np.prod(n)) for n in lazy.values()))
    info = group_info(path, group) if (path / group).exists() else None
    done, state, changes = 0, "new", []
    if info is not None and not holds_result(path, group, info):
        info = None
    if info is not None and info.get("fingerprint") != fp:
        state = "conflict"
        changes = diff_params({"task": info.get("task"), **(info.get("params") or {})}, {"task": task, **jsonable(params)})
    elif info is not None:
        regrid = [f"chunks of {v}: {stored_chunks(path, group, v)} -> {tuple(a.chunksize)}"
                  for v, a in regular.items() if stored_chunks(path, group, v) not in (None, tuple(a.chunksize))]
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


def open_group(path: str | os.PathLike, group: str, *, require_complete: bool = True) -> xr.Dataset:
    """Open one task group of a store with ``xr.open_zarr``, after a quick check of its chunks.

    Raises ``StoreError`` when the group is absent, or incomplete and ``require_complete``, or
    when a chunk file is missing or of the wrong size (naming the variable and the chunk).

    Parameters
    ----------
    path : str or PathLike
        The zarr store.
    group : str
        The task group.
    require_complete : bool
        Refuse a group whose write has not finished.

    Returns
    -------
    Dataset
        The group, lazily opened (dask-backed variables, dims as written).

    Examples
    --------
    >>> import os, tempfile
    >>> import interpretome as it
    >>> store = os.path.join(tempfile.mkdtemp(), "demo.zarr")
    >>> _ = it.write_dataset(it.sequences_to_dataset({"a": "ACGT", "b": "GG"}), store, "seqs", task="copy", params={})
    >>> ds = it.open_group(store, "seqs")
    >>> dict(ds.sizes), ds["sequence_length"].values.tolist()
    ({'sequence': 2, 'position': 4}, [4, 2])
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
