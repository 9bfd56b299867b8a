"""Chunk manifests: which chunks of a group are written, and the checksum of each chunk's bytes.

Layout inside a group — itself a small zarr hierarchy, so zarr and xarray read the store
without warnings and ``xr.open_datatree`` shows the records::

    <group>/.interpretome/                zarr group; attrs "static": the records of the arrays
                                          written when the group was initialised (coordinates,
                                          numpy variables): {variable: {chunk key: record}}
    <group>/.interpretome/done/<variable> zarr array (one element per chunk of the variable,
                                          dtype S96, uncompressed, one file per element): element
                                          ``i.j.k`` is ``b"<size>:<sha256>"`` of the stored chunk
                                          file, written (atomically) after the chunk's data

A chunk counts as written only when its manifest record exists *and* its stored file has the
recorded size (the quick check of ``info`` and ``open_group``) and, for a full check
(``interpretome verify``, and every resume), the recorded sha256. Chunks are always written as
files, fill values included (zarr's ``write_empty_chunks``), so a deleted chunk file is always seen.
A manifest file without a record (empty, written by interpretome 0.1) is checked for existence only.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

META_DIR = ".interpretome"
RECORD_BYTES = 96


@dataclass(frozen=True)
class Damage:
    """One bad chunk of a stored group: ``variable``, chunk ``key`` ("i.j.k") and what is wrong."""

    group: str
    variable: str
    chunk: str
    problem: str

    def __str__(self) -> str:
        return f"{self.group}/{self.variable} chunk {self.chunk}: {self.problem}"


@dataclass
class GroupScan:
    """The state of a group's chunks: valid chunk keys per lazy variable, damage, missing counts."""

    done: dict[str, set[str]] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    damaged: list[Damage] = field(default_factory=list)

    @property
    def missing(self) -> dict[str, int]:
        """Return the number of chunks without a valid record, per lazy variable (damaged included)."""
        return {v: self.total[v] - len(self.done.get(v, ())) for v in self.total}

    @property
    def n_done(self) -> int:
        """Return the number of valid written chunks over all lazy variables."""
        return sum(len(s) for s in self.done.values())

    @property
    def n_total(self) -> int:
        """Return the number of chunks of all lazy variables."""
        return sum(self.total.values())


def done_dir(path: Path, group: str, var: str) -> Path:
    """Return the folder of the chunk manifest files of ``group/var``."""
    return Path(path) / group / META_DIR / "done" / var


def _write_json(file: Path, obj: dict) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, "w") as fh:
        json.dump(obj, fh)


def init_records(path: Path, group: str, lazy: dict[str, tuple[tuple[str, ...], tuple[int, ...]]]) -> None:
    """Create the group's record hierarchy: ``lazy`` maps a variable to (dims, chunk grid)."""
    meta = Path(path) / group / META_DIR
    _write_json(meta / ".zgroup", {"zarr_format": 2})
    _write_json(meta / "done" / ".zgroup", {"zarr_format": 2})
    for var, (dims, grid) in lazy.items():
        adir = meta / "done" / var
        _write_json(adir / ".zarray", {
            "zarr_format": 2, "shape": list(grid) or [1], "chunks": [1] * max(len(grid), 1),
            "dtype": f"|S{RECORD_BYTES}", "compressor": None, "fill_value": "", "order": "C",
            "filters": None, "dimension_separator": "."})
        _write_json(adir / ".zattrs", {
            "_ARRAY_DIMENSIONS": [f"chunk_{d}" for d in dims] or ["chunk"],
            "description": f"written-chunk records of {var}: b'<bytes>:<sha256>' of each stored chunk "
                           f"file, empty where the chunk is not written yet"})


def chunk_key(index: tuple[int, ...]) -> str:
    """Return the manifest key of a chunk index: "i.j.k" ("0" for a 0-d array)."""
    return ".".join(map(str, index)) if index else "0"


def array_meta(array_dir: Path) -> dict:
    """Return the zarr format-2 ``.zarray`` metadata of an array folder."""
    with open(Path(array_dir) / ".zarray") as fh:
        return json.load(fh)


def chunk_keys(meta: dict) -> list[tuple[int, ...]]:
    """Return every chunk index of an array from its ``.zarray`` metadata (shape and chunks)."""
    grid = [max(1, -(-s // c)) if s else 0 for s, c in zip(meta["shape"], meta["chunks"])]
    return list(itertools.product(*[range(n) for n in grid]))


def chunk_file(array_dir: Path, index: tuple[int, ...], sep: str = ".") -> Path:
    """Return the path of the stored file of chunk ``index`` of a format-2 array."""
    return Path(array_dir) / (sep.join(map(str, index)) if index else "0")


def file_record(path: Path) -> dict:
    """Return ``{"size": bytes, "sha256": hex}`` of a stored chunk file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
            size += len(block)
    return {"size": size, "sha256": h.hexdigest()}


def write_marker(marker: Path, record: dict) -> None:
    """Write a chunk's record (``{"size", "sha256"}``) atomically: a temporary file renamed into place."""
    tmp = f"{marker}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(f"{record['size']}:{record['sha256']}".encode().ljust(RECORD_BYTES, b"\0"))
    os.replace(tmp, marker)


def read_marker(marker: Path) -> dict | None:
    """Return a chunk's record, ``{}`` for a legacy empty file, None when absent or unreadable."""
    try:
        raw = Path(marker).read_bytes()
    except OSError:
        return None
    text = raw.rstrip(b"\0").decode("ascii", "replace").strip()
    if not text:
        return {}
    size, sep, digest = text.partition(":")
    if not sep or not size.isdigit() or len(digest) != 64:
        return None
    return {"size": int(size), "sha256": digest}


def present_records(ddir: Path) -> set[str]:
    """Return the chunk keys that have a record file in a variable's record folder."""
    if not ddir.exists():
        return set()
    return {f for f in os.listdir(ddir) if ".tmp" not in f and not f.startswith(".")}


def check_file(file: Path, record: dict | None, full: bool) -> str | None:
    """Return what is wrong with a stored chunk file against its record, or None when it is good."""
    if not file.exists():
        return "chunk file is missing"
    if not record:
        return None
    size = file.stat().st_size
    if size != record["size"]:
        return f"chunk file has {size} bytes, {record['size']} were written (truncated or replaced)"
    if full and file_record(file)["sha256"] != record["sha256"]:
        return "chunk file's sha256 differs from the one recorded when it was written (corrupted)"
    return None


def record_static(path: Path, group: str, variables: list[str]) -> None:
    """Record the chunk files of ``variables`` written at initialisation (coordinates, numpy data)."""
    out = {}
    for v in variables:
        adir = Path(path) / group / v
        meta = array_meta(adir)
        sep = meta.get("dimension_separator") or "."
        out[v] = {chunk_key(i): file_record(chunk_file(adir, i, sep)) for i in chunk_keys(meta)
                  if chunk_file(adir, i, sep).exists()}
    _write_json(Path(path) / group / META_DIR / ".zattrs", {"static": out})


def read_static(path: Path, group: str) -> dict:
    """Return the records of the arrays written at initialisation ({} when none were recorded)."""
    f = Path(path) / group / META_DIR / ".zattrs"
    try:
        return json.loads(f.read_text()).get("static") or {}
    except (OSError, ValueError):
        return {}


def scan_group(path: Path, group: str, lazy_vars: list[str], *, full: bool) -> GroupScan:
    """Return the state of every chunk of ``group``: valid records, damage, totals.

    ``lazy_vars`` are the variables written chunk by chunk (with manifest files); the arrays
    recorded at initialisation are checked too. ``full`` compares sha256 checksums (reads every
    chunk); otherwise only existence and size are checked (a stat per chunk).
    """
    path = Path(path)
    scan = GroupScan()
    for v in lazy_vars:
        adir = path / group / v
        if not (adir / ".zarray").exists():
            scan.total[v] = 1
            scan.damaged.append(Damage(group, v, "-", "array metadata (.zarray) is missing"))
            continue
        meta = array_meta(adir)
        sep = meta.get("dimension_separator") or "."
        ddir = done_dir(path, group, v)
        present = present_records(ddir)
        keys = chunk_keys(meta)
        scan.total[v] = len(keys)
        good = scan.done.setdefault(v, set())
        for index in keys:
            key = chunk_key(index)
            if key not in present:
                continue
            record = read_marker(ddir / key)
            problem = "manifest record is unreadable" if record is None else \
                check_file(chunk_file(adir, index, sep), record, full)
            if problem:
                scan.damaged.append(Damage(group, v, key, problem))
            else:
                good.add(key)
    for v, records in read_static(path, group).items():
        adir = path / group / v
        if not (adir / ".zarray").exists():
            scan.damaged.append(Damage(group, v, "-", "array metadata (.zarray) is missing"))
            continue
        meta = array_meta(adir)
        sep = meta.get("dimension_separator") or "."
        for key, record in records.items():
            index = tuple(int(i) for i in key.split(".")) if meta["shape"] else ()
            problem = check_file(chunk_file(adir, index, sep), record, full)
            if problem:
                scan.damaged.append(Damage(group, v, key, problem))
    return scan


def forget(path: Path, damage: list[Damage]) -> None:
    """Delete the manifest files of damaged chunks so that a rerun computes them again."""
    for d in damage:
        marker = done_dir(path, d.group, d.variable) / d.chunk
        if marker.exists():
            marker.unlink()
