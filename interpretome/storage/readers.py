"""Readers that turn input files into lazy xarray Datasets.

DNA: FASTA (plain or gzipped, many records) through pyfaidx's index, as ``sequence_code``
(sequence, position) uint8 with A,C,G,T,N = 0..4, chunked by sequence and position, plus
``sequence_length`` (sequence). Lower case (soft-masked) bases read as upper case; N stays N
(one-hot: all zeros); sequences shorter than the longest are padded with code 4 past their
``sequence_length``. Any other character is an error naming the record and 1-based position.

Plain gzip is not random-access, so a ``.gz`` FASTA is decompressed once (streaming) into the
cache directory (``$INTERPRETOME_CACHE`` or ``~/.cache/interpretome``) and indexed there; workers
read chunks from that file, so the graph carries only paths and coordinates, never sequence.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import threading
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from dask.highlevelgraph import HighLevelGraph

from ..errors import InputError
from .alphabet import CODE_N, decode_bases, encode_bases  # noqa: F401 (decode_bases: re-exported)
from .schema import POSITION, SEQUENCE

def cache_dir() -> Path:
    """Return (and create) interpretome's cache directory."""
    d = Path(os.environ.get("INTERPRETOME_CACHE", Path.home() / ".cache" / "interpretome"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _plain_fasta(path: Path) -> Path:
    """Return a path to an uncompressed, indexable copy of ``path`` (decompressing .gz once)."""
    if path.suffix != ".gz":
        return path
    st = path.stat()
    tag = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_dir() / "fasta" / f"{tag}-{path.stem}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + f".tmp{os.getpid()}")
        try:
            with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
        except (OSError, EOFError) as e:
            tmp.unlink(missing_ok=True)
            raise InputError(f"FASTA {str(path)!r} is not readable gzip ({e}): check the file") from e
        os.replace(tmp, out)
    return out


_HANDLES: dict[str, object] = {}
_LOCK = threading.RLock()  # pyfaidx seeks+reads one file object and may rebuild its index: serialise


def open_fasta(path: str | os.PathLike):
    """Return this process's cached ``pyfaidx.Fasta`` (raw strings, upper case) for a plain or gzipped FASTA.

    The index goes beside the file, or into the cache directory when that place is read-only.
    """
    import pyfaidx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"FASTA file {str(path)!r} does not exist: check the path")
    with _LOCK:
        return _open_fasta_locked(path, pyfaidx)


def _open_fasta_locked(path: Path, pyfaidx):
    plain = _plain_fasta(path)
    key = str(plain)
    handles = _HANDLES
    if key not in handles:
        index = None
        if not os.access(plain.parent, os.W_OK) and not Path(f"{plain}.fai").exists():
            index = str(cache_dir() / "fasta" / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".fai"))
            Path(index).parent.mkdir(parents=True, exist_ok=True)
        try:
            handles[key] = pyfaidx.Fasta(key, indexname=index, as_raw=True, sequence_always_upper=True,
                                                read_long_names=False, rebuild=True)
        except (pyfaidx.FastaIndexingError, pyfaidx.UnsupportedCompressionFormat, ValueError) as e:
            raise InputError(f"FASTA {str(path)!r} cannot be indexed ({e}): check it is FASTA "
                             f"(records starting with '>', equal line lengths within a record)") from e
        if not len(handles[key].keys()):
            del handles[key]
            raise InputError(f"FASTA {str(path)!r} holds no records: check the file")
    return handles[key]


def fasta_records(path: str | os.PathLike) -> dict[str, int]:
    """Return ``{record name: length}`` in file order."""
    fa = open_fasta(path)
    return {name: len(fa[name]) for name in fa.keys()}


def read_codes(path: str | os.PathLike, record: str, start: int, end: int) -> np.ndarray:
    """Return uint8 codes of ``record[start:end]`` (0-based, end exclusive) read through the index."""
    fa = open_fasta(path)
    with _LOCK:
        text = fa[record][start:end]
    return encode_bases(text, record, start)


def validate_fasta(path: str | os.PathLike, piece: int = 1 << 22) -> None:
    """Scan every record in pieces of ``piece`` bases; raise ``InputError`` at the first bad base."""
    fa = open_fasta(path)
    for name in fa.keys():
        n = len(fa[name])
        for s in range(0, n, piece):
            with _LOCK:
                text = fa[name][s:min(n, s + piece)]
            encode_bases(text, name, s)


def _read_block(path: str, names: tuple[str, ...], lengths: tuple[int, ...], p0: int, p1: int) -> np.ndarray:
    out = np.full((len(names), p1 - p0), CODE_N, np.uint8)
    for i, (name, n) in enumerate(zip(names, lengths)):
        if p0 < n:
            out[i, :min(p1, n) - p0] = read_codes(path, name, p0, min(p1, n))
    return out


def _chunks(total: int, size: int) -> tuple[int, ...]:
    size = max(1, int(size))
    return tuple(min(size, total - s) for s in range(0, total, size)) or (0,)


def fasta_code_array(path: str | os.PathLike, *, sequence_chunk: int, position_chunk: int,
                     validate: bool = True) -> tuple[tuple[str, ...], np.ndarray, da.Array]:
    """Return ``(record names, lengths (sequence,) int64, codes (sequence, position) uint8 dask)``.

    Each chunk of ``codes`` is read from the file through its index by its own task (the graph
    carries the path and coordinates only); rows are padded with N (4) past their length.
    ``validate`` scans the file once for bad characters before any work starts.
    """
    path = Path(path)
    records = fasta_records(path)
    if validate:
        validate_fasta(path)
    names = tuple(records)
    lengths = np.array([records[n] for n in names], np.int64)
    lmax = int(lengths.max())
    schunks = _chunks(len(names), sequence_chunk)
    pchunks = _chunks(lmax, min(int(position_chunk), lmax))
    token = hashlib.sha256(f"{path.resolve()}:{path.stat().st_mtime_ns}:{schunks}:{pchunks}".encode()).hexdigest()[:16]
    name = f"read-fasta-{token}"
    dsk = {}
    s0 = 0
    for i, sc in enumerate(schunks):
        p0 = 0
        for j, pc in enumerate(pchunks):
            dsk[(name, i, j)] = (_read_block, str(path), names[s0:s0 + sc],
                                 tuple(int(x) for x in lengths[s0:s0 + sc]), p0, p0 + pc)
            p0 += pc
        s0 += sc
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return names, lengths, da.Array(graph, name, chunks=(schunks, pchunks), dtype=np.uint8)


def read_fasta(
    path: str | os.PathLike,
    *,
    sequence_chunk: int = 64,
    position_chunk: int = 1 << 20,
    validate: bool = True,
) -> xr.Dataset:
    """Return a lazy Dataset of a FASTA file's records.

    Variables: ``sequence_code`` (sequence, position) uint8 chunked ``(sequence_chunk,
    position_chunk)``, read from the file by the tasks; ``sequence_length`` (sequence) int64.
    Coordinates: ``sequence`` = record names, ``position`` = 0-based offsets. ``validate`` scans the
    file once for bad characters so a bad base fails before any work starts.

    Parameters
    ----------
    path : str or PathLike
        A FASTA file (plain or gzipped).
    sequence_chunk, position_chunk : int
        Chunk sizes along ``sequence`` and ``position``.
    validate : bool
        Scan the file for bad characters before returning.

    Returns
    -------
    Dataset
        ``sequence_code`` (sequence, position) uint8 (A=0, C=1, G=2, T=3, N=4, padded with N past a
        record's end) and ``sequence_length`` (sequence,) int64. Lazy.

    Examples
    --------
    >>> import os, tempfile
    >>> import interpretome as it
    >>> path = os.path.join(tempfile.mkdtemp(), "two.fa")
    >>> _ = open(path, "w").write(">r1\\nACGT\\nAC\\n>r2\\nGG\\n")
    >>> ds = it.read_fasta(path)
    >>> dict(ds.sizes), ds["sequence_length"].values.tolist()
    ({'sequence': 2, 'position': 6}, [6, 2])
    >>> ds["sequence_code"].values.tolist()
    [[0, 1, 2, 3, 0, 1], [2, 2, 4, 4, 4, 4]]
    """
    names, lengths, codes = fasta_code_array(path, sequence_chunk=sequence_chunk, position_chunk=position_chunk,
                                             validate=validate)
    lmax = codes.shape[1]
    ds = xr.Dataset(
        {"sequence_code": ((SEQUENCE, POSITION), codes), "sequence_length": ((SEQUENCE,), lengths)},
        coords={SEQUENCE: list(names), POSITION: np.arange(lmax)},
        attrs={"source": str(path)},
    )
    return ds


def sequences_to_dataset(
    sequences, names=None, *, sequence_chunk: int = 64, position_chunk: int | None = None
) -> xr.Dataset:
    """Return a Dataset like ``read_fasta``'s from in-memory sequences (strings, or a name->string dict).

    Parameters
    ----------
    sequences : sequence of str or dict
        The sequences (A/C/G/T/N), or ``{name: sequence}``.
    names : sequence of str, optional
        Record names for a list (default ``seq0``, ``seq1`` ...).
    sequence_chunk, position_chunk : int
        Chunk sizes along ``sequence`` and ``position`` (default: the longest sequence).

    Returns
    -------
    Dataset
        ``sequence_code`` (sequence, position) uint8 (N past each sequence's end) and
        ``sequence_length`` (sequence,) int64, as ``read_fasta`` returns them.

    Examples
    --------
    >>> import interpretome as it
    >>> ds = it.sequences_to_dataset({"a": "ACGTN", "b": "GGC"})
    >>> dict(ds.sizes), ds["sequence"].values.tolist(), ds["sequence_length"].values.tolist()
    ({'sequence': 2, 'position': 5}, ['a', 'b'], [5, 3])
    >>> ds["sequence_code"].values.tolist()
    [[0, 1, 2, 3, 4], [2, 2, 1, 4, 4]]
    """
    if isinstance(sequences, dict):
        names, sequences = list(sequences), list(sequences.values())
    sequences = list(sequences)
    if not sequences:
        raise InputError("no sequences given: pass at least one")
    names = list(names) if names is not None else [f"seq{i}" for i in range(len(sequences))]
    if len(names) != len(sequences):
        raise InputError(f"{len(names)} names for {len(sequences)} sequences: pass one name per sequence")
    if len(set(names)) != len(names):
        raise InputError("sequence names must be unique")
    lengths = np.array([len(s) for s in sequences], np.int64)
    lmax = int(lengths.max())
    codes = np.full((len(sequences), lmax), CODE_N, np.uint8)
    for i, (n, s) in enumerate(zip(names, sequences)):
        codes[i, :len(s)] = encode_bases(s, n)
    arr = da.from_array(codes, chunks=(sequence_chunk, position_chunk or lmax))
    return xr.Dataset(
        {"sequence_code": ((SEQUENCE, POSITION), arr), "sequence_length": ((SEQUENCE,), lengths)},
        coords={SEQUENCE: names, POSITION: np.arange(lmax)},
    )


def write_fasta(path: str | os.PathLike, sequences: dict[str, str], width: int = 60) -> Path:
    """Write ``{name: sequence}`` as FASTA (``.gz`` suffix: gzipped) and return the path."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as fh:
        for name, seq in sequences.items():
            fh.write(f">{name}\n")
            for i in range(0, len(seq), width):
                fh.write(seq[i:i + width] + "\n")
    return path
