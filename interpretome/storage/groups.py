"""Task groups of a store: their attrs (task, fingerprint, params, provenance, complete), their
state from the chunk records (complete / damaged / incomplete), verification and a text summary.

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


def read_group_attrs(path: Path, group: str) -> dict | None:
    f = path / group / ".zattrs"
    if not f.exists():
        return None
    with open(f) as fh:
        return json.load(fh)


def group_info(path: str | os.PathLike, group: str) -> dict | None:
    """Return the ``interpretome`` attrs of ``group`` in the store at ``path`` (None if absent)."""
    attrs = read_group_attrs(Path(path), group)
    return None if attrs is None else attrs.get(ATTR)


def list_groups(path: str | os.PathLike) -> list[str]:
    """Return the names of the task groups of a store, sorted."""
    path = Path(path)
    return sorted(p.name for p in path.iterdir() if (p / ".zgroup").exists()) if path.exists() else []


def set_group_attrs(path: Path, group: str, info: dict) -> None:
    import zarr

    g = zarr.open_group(str(path / group), mode="r+", zarr_format=ZARR_FORMAT)
    g.attrs[ATTR] = jsonable(info)


def consolidate(path: Path) -> None:
    import zarr

    zarr.consolidate_metadata(str(path), zarr_format=ZARR_FORMAT)


def ensure_root(path: Path) -> None:
    import zarr

    from ..version import __version__

    root = zarr.open_group(str(path), mode="a", zarr_format=ZARR_FORMAT)
    if ATTR not in root.attrs:
        root.attrs[ATTR] = {"version": __version__, "created": now()}


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
    return {g: group_state(path, g, full=True) for g in (groups or names)}


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
