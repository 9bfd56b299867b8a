"""Task groups of a store: their attrs (task, fingerprint, params, provenance, complete), their
state from the chunk records (complete / damaged / incomplete), verification and a text summary.

Group attrs are netCDF-compatible, so ``xr.open_zarr(store, group=g).to_netcdf(path)`` works: the
provenance record ``interpretome`` is JSON text (``group_info`` returns it as a dict; stores of
interpretome <= 0.1 hold it as a nested object, read the same way), beside flat scalar keys
``interpretome_task``, ``interpretome_fingerprint`` and ``interpretome_status``. The status is a
mirror of the chunk records for readers without interpretome: ``running`` while a write runs,
``complete`` once every chunk has a valid record, ``interrupted`` when a write stopped before that,
``damaged`` when ``verify`` found bad chunks; the records (``manifest``) stay the truth. Other attrs
a netCDF file cannot hold (dicts, nested or string lists, booleans, None) are stored as JSON text
and named in the ``interpretome_json_attrs`` attr of their variable or group (``decoded_attr``).

Read-only helpers plus the few writes of group metadata (attrs, consolidation); the chunk data
is written by ``store.write_dataset`` through ``chunk_io``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import StoreError
from . import manifest
from .manifest import Damage
from .provenance import now

ZARR_FORMAT = 2
ATTR = "interpretome"
STATUS_ATTR = "interpretome_status"
TASK_ATTR = "interpretome_task"
FINGERPRINT_ATTR = "interpretome_fingerprint"
JSON_ATTRS = "interpretome_json_attrs"
"""Attr naming (space-separated) the attrs stored as JSON text because netCDF cannot hold their value."""
STATUSES = ("running", "complete", "interrupted", "damaged")


def jsonable(obj: Any) -> Any:
    """Return ``obj`` converted to plain JSON types (numpy scalars/arrays, paths, tuples, sets)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(jsonable(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    return repr(obj)


def fingerprint(params: dict) -> str:
    """Return the sha256 hex digest of ``params`` as canonical JSON (sorted keys)."""
    text = json.dumps(jsonable(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


_INT32 = (-(2 ** 31), 2 ** 31 - 1)


def _netcdf_number(value) -> bool:
    """Return whether ``value`` is a number every netCDF format holds (netCDF-3 has no 64-bit integers)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return _INT32[0] <= int(value) <= _INT32[1]
    return isinstance(value, (float, np.floating))


def _netcdf_value(value) -> bool:
    """Return whether netCDF (3 and 4) can hold ``value`` as an attribute as it is."""
    if isinstance(value, str):
        return True
    if isinstance(value, (list, tuple)):
        return len(value) > 0 and all(_netcdf_number(v) for v in value)
    return _netcdf_number(value)


def netcdf_attrs(attrs: dict) -> dict:
    """Return ``attrs`` with every value netCDF cannot hold as JSON text, named in ``JSON_ATTRS``.

    Kept as they are: strings, numbers and non-empty lists of numbers (integers within 32 bits, which
    netCDF-3 holds). Dicts, lists of strings, nested lists, booleans, None and larger integers become
    JSON text (``decoded_attr`` reads them back).
    """
    out, encoded = {}, []
    for k, v in attrs.items():
        if k == JSON_ATTRS:
            continue
        v = jsonable(v) if not isinstance(v, (str, int, float)) else v
        if _netcdf_value(v):
            out[k] = v
        else:
            out[k] = json.dumps(v, sort_keys=True)
            encoded.append(str(k))
    if encoded:
        out[JSON_ATTRS] = " ".join(encoded)
    return out


def decoded_attr(attrs: dict, key: str, default: Any = None) -> Any:
    """Return ``attrs[key]`` as written: JSON text named in ``JSON_ATTRS`` is decoded; ``default`` if absent.

    Works on stored attrs (``open_group``, plain ``xr.open_zarr``) and on in-memory results alike.
    """
    if key not in attrs:
        return default
    value = attrs[key]
    if isinstance(value, str) and key in str(attrs.get(JSON_ATTRS, "")).split():
        return json.loads(value)
    return value


def read_group_attrs(path: Path, group: str) -> dict | None:
    """Return the raw attrs of ``group`` (its ``.zattrs``), None when the group has none."""
    f = path / group / ".zattrs"
    if not f.exists():
        return None
    with open(f) as fh:
        return json.load(fh)


def group_info(path: str | os.PathLike, group: str) -> dict | None:
    """Return the ``interpretome`` record of ``group`` in the store at ``path`` as a dict (None if absent).

    The record is stored as JSON text (a nested object in stores of interpretome <= 0.1: read too).
    """
    attrs = read_group_attrs(Path(path), group)
    if attrs is None or ATTR not in attrs:
        return None
    value = attrs[ATTR]
    return json.loads(value) if isinstance(value, str) else value


def group_status(path: str | os.PathLike, group: str) -> str | None:
    """Return the group's ``interpretome_status`` attr (a mirror of its chunk records), None when absent."""
    attrs = read_group_attrs(Path(path), group) or {}
    return attrs.get(STATUS_ATTR)


def list_groups(path: str | os.PathLike) -> list[str]:
    """Return the names of the task groups of a store, sorted."""
    path = Path(path)
    return sorted(p.name for p in path.iterdir() if (p / ".zgroup").exists()) if path.exists() else []


def set_group_attrs(path: Path, group: str, info: dict, status: str | None = None) -> None:
    """Write the group's ``interpretome`` record (JSON text) and its flat keys; ``status`` if given.

    ``status`` (one of ``STATUSES``) is the caller's statement of the chunk records: ``complete``
    only after a scan found every chunk recorded. Without it the stored status is kept.
    """
    import zarr

    if status is not None and status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    g = zarr.open_group(str(path / group), mode="r+", zarr_format=ZARR_FORMAT)
    info = jsonable(info)
    new = {ATTR: json.dumps(info, sort_keys=True), TASK_ATTR: str(info.get("task") or ""),
           FINGERPRINT_ATTR: str(info.get("fingerprint") or "")}
    if status is not None:
        new[STATUS_ATTR] = status
    g.attrs.update(new)


def set_group_status(path: Path, group: str, status: str) -> None:
    """Set the group's ``interpretome_status`` attr and consolidate the store's metadata."""
    import zarr

    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    g = zarr.open_group(str(Path(path) / group), mode="r+", zarr_format=ZARR_FORMAT)
    g.attrs[STATUS_ATTR] = status
    consolidate(Path(path))


def consolidate(path: Path) -> None:
    import zarr

    zarr.consolidate_metadata(str(path), zarr_format=ZARR_FORMAT)


def ensure_root(path: Path) -> None:
    import zarr

    from ..version import __version__

    root = zarr.open_group(str(path), mode="a", zarr_format=ZARR_FORMAT)
    if ATTR not in root.attrs:
        set_json_attr(root, ATTR, {"version": __version__, "created": now()})


def set_json_attr(node, key: str, value: Any) -> None:
    """Store ``value`` as JSON text in the attrs of zarr ``node`` under ``key``, named in ``JSON_ATTRS``
    (so netCDF and plain xarray can hold it; ``decoded_attr`` reads it back)."""
    names = set(str(node.attrs.get(JSON_ATTRS, "")).split()) | {key}
    node.attrs.update({key: json.dumps(jsonable(value), sort_keys=True), JSON_ATTRS: " ".join(sorted(names))})


def diff_params(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Return readable ``key: old -> new`` lines for the keys where two param dicts differ."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_params(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def holds_result(path: Path, group: str, info: dict) -> bool:
    """Return whether a group holds any written result (complete, or at least one chunk manifest)."""
    if info.get("complete"):
        return True
    done = path / group / manifest.META_DIR / "done"
    return done.exists() and any(manifest.present_records(d) for d in done.iterdir() if d.is_dir())


def stored_chunks(path: Path, group: str, var: str) -> tuple[int, ...] | None:
    """Return the chunk shape of a stored array (None when absent)."""
    f = path / group / var / ".zarray"
    return tuple(manifest.array_meta(f.parent)["chunks"]) if f.exists() else None


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
    states = {g: group_state(path, g, full=True) for g in (groups or names)}
    mirror_status(path, {g: state for g, (state, _) in states.items()})
    return states


_STATE_STATUS = {"complete": "complete", "damaged": "damaged", "incomplete": "interrupted"}


def mirror_status(path: Path, states: dict[str, str]) -> None:
    """Bring the groups' ``interpretome_status`` attrs in line with full-check ``states`` (``verify_store``).

    Skipped when a live run holds the store's lock (its writer owns the attrs) or the store is
    read-only for this user (then the attrs stay as the last write left them).
    """
    from .lock import read_lock, stale_reason

    holder = read_lock(path)
    if holder is not None and stale_reason(holder) is None:
        return
    changed = False
    for g, state in states.items():
        want = _STATE_STATUS[state]
        if group_status(path, g) == want or group_info(path, g) is None:
            continue
        if not os.access(path / g / ".zattrs", os.W_OK):
            return
        import zarr

        zarr.open_group(str(path / g), mode="r+", zarr_format=ZARR_FORMAT).attrs[STATUS_ATTR] = want
        changed = True
    if changed:
        consolidate(path)


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
