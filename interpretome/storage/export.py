"""Exports of stored results to files other tools read.

Tracks (``track_prediction`` of a tiled-prediction group): **bedGraph** always (plain text,
0-based end-exclusive intervals in genome coordinates, NaN bins left out), **bigWig** through
pyBigWig when it is importable (``pip install pyBigWig``, the ``bigwig`` extra). Bins are laid out
by the track's ``TrackGeometry`` attrs (see ``storage.genome``); rows (contigs or regions) are
written in FASTA contig order then start, and overlapping regions on one contig are refused (bigWig
and bedGraph intervals must not overlap). Tracks are read ``piece`` bins at a time, so a
chromosome-scale track is never loaded whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import ExportError
from .genome import TrackGeometry


def _track_rows(ds: xr.Dataset):
    if "track_prediction" not in ds:
        raise ExportError(f"the dataset has no track_prediction (it has {sorted(ds.data_vars)}): export a "
                          f"tiled-prediction group (interpretome tiles)")
    geom = TrackGeometry.from_attrs(ds.attrs)
    names = [str(n) for n in ds["contig_name"].values]
    starts = ds["region_start"].values.astype(np.int64)
    ends = ds["region_end"].values.astype(np.int64)
    index = ds["contig_index"].values.astype(np.int64) if "contig_index" in ds.coords else np.zeros(len(names))
    order = sorted(range(len(names)), key=lambda i: (index[i], names[i], starts[i]))  # FASTA order
    for a, b in zip(order, order[1:]):
        if names[a] == names[b] and starts[b] < ends[a]:
            raise ExportError(f"regions {ds['contig'].values[a]!r} and {ds['contig'].values[b]!r} overlap on "
                              f"{names[a]!r}: export them to separate files (select rows with ds.isel(contig=...))")
    return geom, names, starts, ends, order


def target_index(ds: xr.Dataset, target) -> int:
    """Return the index along ``target`` of ``target`` (None: 0; an int; or a name); ``ExportError`` if absent."""
    if target is None:
        return 0
    if isinstance(target, (int, np.integer)):
        return int(target)
    names = [str(t) for t in ds["target"].values]
    if str(target) not in names:
        raise ExportError(f"target {target!r} is not in the track (targets: {names})")
    return names.index(str(target))


def _pieces(ds, geom, row, start, end, t, piece):
    """Yield ``(starts, ends, values)`` genome intervals of one row, ``piece`` bins at a time, NaN dropped."""
    length = int(end - start)
    n = geom.n_bins(length)
    var = ds["track_prediction"]
    for b0 in range(0, n, piece):
        b1 = min(n, b0 + piece)
        vals = np.asarray(var[row, b0:b1, t].values, np.float64)
        s, e, _ = geom.bin_intervals(length, b0, b1)
        ok = np.isfinite(vals)
        yield start + s[ok], start + e[ok], vals[ok]


def export_bedgraph(ds: xr.Dataset, path: str | os.PathLike, *, target=None, piece: int = 1 << 20,
                    track_line: bool = True) -> Path:
    """Write one target of a track as bedGraph and return the path (``.gz`` suffix: gzipped)."""
    import gzip

    geom, names, starts, ends, order = _track_rows(ds)
    t = target_index(ds, target)
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as fh:
        if track_line:
            tname = str(ds["target"].values[t]) if "target" in ds.coords else "track"
            fh.write(f'track type=bedGraph name="{tname}"\n')
        for i in order:
            for s, e, v in _pieces(ds, geom, i, int(starts[i]), int(ends[i]), t, piece):
                fh.writelines(f"{names[i]}\t{a}\t{b}\t{x:.6g}\n" for a, b, x in zip(s, e, v))
    return path


def export_bigwig(ds: xr.Dataset, path: str | os.PathLike, chrom_sizes: dict[str, int], *, target=None,
                  piece: int = 1 << 20) -> Path:
    """Write one target of a track as bigWig (needs pyBigWig) and return the path.

    ``chrom_sizes`` maps every contig to its full length (the bigWig header), e.g.
    ``storage.readers.fasta_records(fasta)``.
    """
    try:
        import pyBigWig
    except ImportError as e:
        raise ExportError("bigWig export needs pyBigWig, which is not importable here "
                          f"({e}): pip install pyBigWig (or interpretome[bigwig]), or export bedGraph "
                          "and convert it with UCSC bedGraphToBigWig") from e
    geom, names, starts, ends, order = _track_rows(ds)
    missing = sorted({n for n in names if n not in chrom_sizes})
    if missing:
        raise ExportError(f"chrom_sizes lacks {missing}: pass the lengths of every contig of the track")
    t = target_index(ds, target)
    path = Path(path)
    bw = pyBigWig.open(str(path), "w")
    try:
        first = list(dict.fromkeys(names[i] for i in order))  # entries must follow the header's order
        header = first + [str(k) for k in chrom_sizes if str(k) not in first]
        bw.addHeader([(k, int(chrom_sizes[k])) for k in header])
        for i in order:
            for s, e, v in _pieces(ds, geom, i, int(starts[i]), int(ends[i]), t, piece):
                if len(s):
                    bw.addEntries([names[i]] * len(s), s.tolist(), ends=e.tolist(), values=v.tolist())
    finally:
        bw.close()
    return path
